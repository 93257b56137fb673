"""The synthetic corpus: deterministic, ingestible, emotions audible in simple acoustics,
learnable across speakers but not trivially."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from emodistill.data.synth import EMOTIONS, SynthConfig, synthesize, synthesize_clip

SMALL = dict(speakers=2, utterances=2, min_seconds=1.0, max_seconds=1.5, workers=1)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_deterministic_and_seed_dependent(tmp_path):
    synthesize(tmp_path / "a", SynthConfig(**SMALL))
    synthesize(tmp_path / "b", SynthConfig(**SMALL))
    synthesize(tmp_path / "c", SynthConfig(**SMALL, seed=1))
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if k.endswith(".wav"))


def test_manifest_and_audio(tmp_path):
    cfg = SynthConfig(**SMALL, emotions=["angry", "sad", "calm"], sample_rate=22050)
    manifest = synthesize(tmp_path, cfg)
    rows = list(csv.reader(open(manifest)))
    assert rows[0] == ["path", "label", "speaker"]
    assert len(rows) - 1 == 2 * 3 * 2 and rows[1:] == sorted(rows[1:])
    for path, label, speaker in rows[1:]:
        assert path.startswith(f"wav/{speaker}/{speaker}_{label}_")
        wave, rate = sf.read(tmp_path / path, dtype="float32")
        assert rate == 22050 and wave.ndim == 1
        assert 1.0 <= wave.size / rate <= 1.5
        assert np.isfinite(wave).all() and 1e-3 < np.abs(wave).max() < 0.99


def test_a_clip_does_not_depend_on_the_other_clips(tmp_path):
    synthesize(tmp_path / "two", SynthConfig(**SMALL))
    synthesize(tmp_path / "three", SynthConfig(**{**SMALL, "speakers": 3}, emotions=["sad", "angry"]))
    two, three = _files(tmp_path / "two"), _files(tmp_path / "three")
    shared = [k for k in two if k in three and k.endswith(".wav")]
    assert shared and all(two[k] == three[k] for k in shared)


def _features(wave, rate=16000):
    frames = wave[: wave.size // 400 * 400].reshape(-1, 400)
    rms = np.sqrt((frames**2).mean(axis=1)) + 1e-9
    active = frames[rms > 0.3 * rms.max()]
    spec = np.abs(np.fft.rfft(active * np.hanning(400), axis=1))
    freqs = np.fft.rfftfreq(400, 1 / rate)
    centroid = float(((spec * freqs).sum(axis=1) / spec.sum(axis=1)).mean())
    f0 = []
    for x in active[::2]:
        x = x - x.mean()
        ac = np.correlate(x, x, "full")[399:]
        lo, hi = rate // 500, rate // 60
        f0.append(rate / (lo + np.argmax(ac[lo:hi])))
    return {"loudness": float(np.log(rms.mean())), "centroid": centroid, "f0": float(np.median(f0))}


def test_emotions_move_the_acoustics_the_expected_way():
    cfg = SynthConfig(min_seconds=2.0, max_seconds=2.0)
    feats = {
        e: [_features(synthesize_clip(3, s, e, i, cfg)) for s in range(4) for i in range(4)]
        for e in ("angry", "sad", "neutral")
    }
    mean = {e: {k: np.mean([f[k] for f in v]) for k in v[0]} for e, v in feats.items()}
    assert mean["angry"]["loudness"] > mean["neutral"]["loudness"] > mean["sad"]["loudness"]
    assert mean["angry"]["f0"] > mean["neutral"]["f0"] > mean["sad"]["f0"]
    assert mean["angry"]["centroid"] > mean["sad"]["centroid"]


@pytest.mark.slow
def test_learnable_across_speakers_but_not_trivially(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    synthesize(tmp_path, SynthConfig())
    rows = list(csv.DictReader(open(tmp_path / "manifest.csv")))
    x = np.array([list(_features(sf.read(tmp_path / r["path"], dtype="float32")[0]).values()) for r in rows])
    y = np.array([r["label"] for r in rows])
    speakers = np.array([r["speaker"] for r in rows])
    held_out = np.isin(speakers, sorted(set(speakers))[-4:])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[~held_out], y[~held_out])
    accuracy = float((clf.predict(x[held_out]) == y[held_out]).mean())
    assert 0.5 < accuracy < 0.97, accuracy


def test_bad_configs():
    with pytest.raises(ValueError, match="larger than max_seconds"):
        SynthConfig(min_seconds=3, max_seconds=2)
    with pytest.raises(ValueError, match="unknown emotions"):
        SynthConfig(emotions=["angry", "bored"])
    assert set(EMOTIONS) >= {"neutral", "angry", "happy", "sad", "fearful", "surprised", "disgust", "calm"}
