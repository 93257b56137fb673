"""The synthetic corpus: deterministic, well-formed, emotions audible in simple acoustics,
learnable across speakers but not trivially."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import ValidationError

from emodistill.data.synth import EMOTIONS, SynthConfig, synthesize, synthesize_clip

SMALL = {"speakers": 2, "utterances": 2, "min_seconds": 1.0, "max_seconds": 1.5}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def features(wave: np.ndarray, rate: int = 16000) -> dict[str, float]:
    """Simple utterance features: frame loudness, zero crossings, spectral centroid, a crude f0 track."""
    wave = np.asarray(wave, dtype=np.float64)
    frame, hop = int(0.032 * rate), int(0.010 * rate)
    frames = sliding_window_view(wave, frame)[::hop]
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = db > db.max() - 25
    x = frames[active] - frames[active].mean(axis=1, keepdims=True)
    zcr = np.mean(np.signbit(x[:, 1:]) != np.signbit(x[:, :-1]))
    spec = np.abs(np.fft.rfft(x * np.hanning(frame), axis=1))
    centroid = np.mean((spec * np.fft.rfftfreq(frame, 1 / rate)).sum(axis=1) / (spec.sum(axis=1) + 1e-12))
    # f0: the autocorrelation peak between 60 and 500 Hz, on frames that are clearly periodic
    ac = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * frame, axis=1)) ** 2, axis=1)[:, :frame]
    lo, hi = rate // 500, rate // 60
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    voiced = ac[np.arange(len(ac)), lag] > 0.5 * ac[:, 0]
    if voiced.sum() < 5:
        voiced[:] = True
    semitones = 12 * np.log2(rate / lag[voiced])
    t = np.flatnonzero(active)[voiced] * hop / rate
    slope = np.polyfit(t, semitones, 1)[0] if np.ptp(t) > 0 else 0.0
    return {
        "loudness": float(db[active].mean()),  # dB
        "loudness_std": float(db.std()),  # syllables and pauses
        "active": float(active.mean()),
        "zcr": float(zcr),
        "centroid": float(centroid),  # Hz
        "f0": float(np.median(semitones)),  # semitones re 1 Hz
        "f0_range": float(np.percentile(semitones, 80) - np.percentile(semitones, 20)),
        "f0_slope": float(slope),  # semitones per second
    }


def test_deterministic_and_seed_dependent(tmp_path):
    manifest = synthesize(tmp_path / "a", SynthConfig(**SMALL))
    synthesize(tmp_path / "b", SynthConfig(**SMALL))
    synthesize(tmp_path / "c", SynthConfig(**SMALL, seed=1))
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert manifest == tmp_path / "a" / "manifest.csv"
    assert a == b
    assert a.keys() == c.keys() and a["manifest.csv"] == c["manifest.csv"]
    assert all(a[k] != c[k] for k in a if k.endswith(".wav"))


def test_manifest_layout_and_audio(tmp_path):
    cfg = SynthConfig(**SMALL, emotions=["angry", "sad", "calm"], sample_rate=22050)
    manifest = synthesize(tmp_path, cfg)
    lines = manifest.read_text().splitlines()
    assert lines[0] == "path,label,speaker"
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 2 * 3 * 2 and rows == sorted(rows)
    assert {r[2] for r in rows} == {"spk01", "spk02"} and {r[1] for r in rows} == {"angry", "sad", "calm"}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wav")) == [r[0] for r in rows]
    for path, label, speaker in rows:
        assert path.startswith(f"wav/{speaker}/{speaker}_{label}_") and path.endswith(".wav")
        info = sf.info(tmp_path / path)
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", 22050, 1)
        wave, rate = sf.read(tmp_path / path, dtype="float32")
        assert wave.ndim == 1 and 1.0 <= wave.size / rate <= 1.5
        assert np.isfinite(wave).all() and 0.01 < np.abs(wave).max() < 0.95


def test_a_clip_does_not_depend_on_the_other_clips(tmp_path):
    synthesize(tmp_path / "two", SynthConfig(**SMALL))
    synthesize(tmp_path / "three", SynthConfig(**{**SMALL, "speakers": 3, "utterances": 3}, emotions=["sad", "angry"]))
    two, three = _files(tmp_path / "two"), _files(tmp_path / "three")
    shared = [k for k in two if k in three and k.endswith(".wav")]
    assert len(shared) == 2 * 2 * 2
    assert all(two[k] == three[k] for k in shared)


def test_progress_bar_on_stderr(tmp_path, capsys):
    cfg = SynthConfig(**{**SMALL, "utterances": 1, "min_seconds": 0.2, "max_seconds": 0.3})
    synthesize(tmp_path, cfg, progress=True)
    captured = capsys.readouterr()
    assert "synth" in captured.err and "8/8" in captured.err and captured.out == ""


def _mean_features(cfg, emotion, clips):
    rows = [features(synthesize_clip(cfg, s, emotion, i), cfg.sample_rate) for s, i in clips]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def test_emotions_move_the_acoustics_the_expected_way():
    cfg = SynthConfig(min_seconds=1.5, max_seconds=1.5)
    clips = [(s, i) for s in range(6) for i in range(4)]  # the same speakers for every emotion
    angry, neutral, sad, surprised = (_mean_features(cfg, e, clips) for e in ("angry", "neutral", "sad", "surprised"))
    assert angry["loudness"] > neutral["loudness"] + 1 and neutral["loudness"] > sad["loudness"] + 2  # dB
    assert angry["f0"] > neutral["f0"] + 1 and neutral["f0"] > sad["f0"] + 0.5  # semitones
    assert angry["centroid"] > neutral["centroid"] and angry["centroid"] > sad["centroid"]  # flatter tilt
    assert angry["zcr"] > sad["zcr"]
    assert angry["f0_range"] > sad["f0_range"]
    assert surprised["f0_slope"] > 0 > angry["f0_slope"]  # rising vs falling contours


@pytest.mark.slow
def test_learnable_across_speakers_but_not_trivially(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    synthesize(tmp_path, SynthConfig())
    with open(tmp_path / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 * 4 * 10
    x = np.array([list(features(*sf.read(tmp_path / r["path"], dtype="float32")).values()) for r in rows])
    y = np.array([r["label"] for r in rows])
    speakers = np.array([r["speaker"] for r in rows])
    held_out = np.isin(speakers, sorted(set(speakers))[-4:])  # two lower and two higher voices
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[~held_out], y[~held_out])
    accuracy = float((clf.predict(x[held_out]) == y[held_out]).mean())
    assert 0.5 < accuracy < 0.97, accuracy  # chance is 0.25


def test_bad_configs():
    with pytest.raises(ValidationError, match=r"min_seconds \(3.0\) is larger than max_seconds \(2.0\)"):
        SynthConfig(min_seconds=3, max_seconds=2)
    with pytest.raises(ValidationError, match=r"unknown emotions \['bored'\]; choose from"):
        SynthConfig(emotions=["angry", "bored"])
    with pytest.raises(ValidationError, match="at least 2 distinct emotions"):
        SynthConfig(emotions=["angry", "angry"])
    with pytest.raises(ValidationError, match="greater than 0"):
        SynthConfig(min_seconds=0)
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        SynthConfig(speakers=1)
    with pytest.raises(ValidationError, match="Extra inputs"):
        SynthConfig(workers=2)
    assert set(EMOTIONS) >= {"neutral", "angry", "happy", "sad", "fearful", "surprised", "disgust", "calm"}
    assert SynthConfig().emotions == ["angry", "happy", "neutral", "sad"]


# ---- other corpora: another acting style, other voices, noise and rooms ----------------------

FIVE = ["angry", "happy", "neutral", "sad", "fearful"]


def test_other_corpora_are_deterministic_and_well_formed():
    for kw in [
        {"prosody": "alt", "voices": "wide"},
        {"noise": "babble", "snr_db": (0.0, 5.0), "reverb_rt60": (0.4, 0.6)},
        {"noise": "white", "snr_db": (3.0, 3.0)},
    ]:
        cfg = SynthConfig(**kw, emotions=FIVE, min_seconds=1.0, max_seconds=1.0)
        a, b = synthesize_clip(cfg, 3, "fearful", 1), synthesize_clip(cfg, 3, "fearful", 1)
        np.testing.assert_array_equal(a, b)
        assert a.size == 16000 and np.isfinite(a).all() and 0.01 < np.abs(a).max() < 0.95, kw
        plain = synthesize_clip(SynthConfig(emotions=FIVE, min_seconds=1.0, max_seconds=1.0), 3, "fearful", 1)
        assert not np.array_equal(a, plain), kw


def test_the_other_acting_style_moves_the_cues_elsewhere():
    cfg = SynthConfig(min_seconds=1.5, max_seconds=1.5, emotions=FIVE)
    alt = cfg.model_copy(update={"prosody": "alt"})
    clips = [(s, i) for s in range(6) for i in range(3)]
    demo_angry, demo_neutral = (_mean_features(cfg, e, clips) for e in ("angry", "neutral"))
    angry, neutral, fearful = (_mean_features(alt, e, clips) for e in ("angry", "neutral", "fearful"))
    # demo: anger is much higher-pitched than neutral speech; alt (cold anger): barely, but still louder
    assert demo_angry["f0"] - demo_neutral["f0"] > 3.0 > angry["f0"] - neutral["f0"]
    assert angry["loudness"] > neutral["loudness"] + 1
    assert fearful["loudness"] < neutral["loudness"]  # fear is quiet here, not in the demo


def test_wide_voices_spread_further_than_the_demo_voices():
    f0 = {v: [features(synthesize_clip(SynthConfig(voices=v, speakers=10), s, "neutral", 0))["f0"] for s in range(10)]
          for v in ("demo", "wide")}
    assert np.ptp(f0["wide"]) > np.ptp(f0["demo"])


def test_noise_and_rooms_lower_the_clarity():
    clean = SynthConfig(min_seconds=1.5, max_seconds=1.5, snr_db=(40.0, 40.0))
    noisy = clean.model_copy(update={"noise": "babble", "snr_db": (0.0, 0.0)})
    room = clean.model_copy(update={"reverb_rt60": (0.9, 0.9)})
    spread = {name: np.mean([features(synthesize_clip(c, s, "angry", 0))["loudness_std"] for s in range(4)])
              for name, c in [("clean", clean), ("noisy", noisy), ("room", room)]}
    # pauses between syllables fill up with babble or with the room's tail
    assert spread["noisy"] < spread["clean"] and spread["room"] < spread["clean"]


def test_other_corpus_is_learnable_across_speakers(tmp_path):
    """Speaker-independent smoke test of the alt corpus: simple features, held-out speakers."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = SynthConfig(prosody="alt", voices="wide", speakers=8, emotions=FIVE, utterances=3, min_seconds=1.2, max_seconds=1.6)
    rows = [(s, e, features(synthesize_clip(cfg, s, e, i))) for s in range(8) for e in FIVE for i in range(3)]
    x = np.array([list(f.values()) for _, _, f in rows])
    y = np.array([e for _, e, _ in rows])
    held_out = np.array([s >= 6 for s, _, _ in rows])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[~held_out], y[~held_out])
    accuracy = float((clf.predict(x[held_out]) == y[held_out]).mean())
    assert accuracy > 0.4, accuracy  # chance is 0.2


def test_bad_noise_and_room_settings():
    with pytest.raises(ValidationError, match="above the high end"):
        SynthConfig(snr_db=(20, 10))
    with pytest.raises(ValidationError, match="positive"):
        SynthConfig(reverb_rt60=(0.0, 0.5))
    with pytest.raises(ValidationError):
        SynthConfig(prosody="opera")
