"""`emodistill synth OUT_DIR`: a synthetic acted-emotion speech corpus (the embedded default).

No recordings can be downloaded here, so the demo and the tests speak to themselves.
Each clip comes from a source-filter model of voiced speech:

    glottal source   Rosenberg pulses following an f0 contour, with jitter (cycle-to-cycle
                     f0 perturbation) and shimmer (amplitude perturbation); the closing
                     phase sets the spectral tilt (abrupt closure = pressed, loud voice)
    + aspiration     breath noise, stronger in soft and sad voices
    x syllables      an amplitude envelope of syllables at the speaking rate, with pauses
                     and short fricative noise bursts between them
    -> vocal tract   three formant resonators per vowel, vowels changing per syllable,
                     formants scaled by the speaker's vocal-tract length
    -> level         loudness of the emotion and speaker, background noise at 15-35 dB SNR

Emotions move the acoustic correlates that acted emotions are known for (pitch level,
range and contour; rate; loudness; tilt; jitter); speakers differ in base pitch,
vocal-tract length, rate, breathiness and level. Each clip draws an emotion intensity
between "barely" and "fully" acted and blends the emotion's profile with neutral speech
accordingly, so classes overlap: a speaker-independent split is meaningful and shallow
features do not separate the classes perfectly.

Deterministic: a clip's random stream is seeded by (seed, speaker, emotion, index) alone,
so it does not depend on which other clips are generated.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import soundfile as sf
from pydantic import Field, field_validator, model_validator
from scipy.signal import lfilter

from emodistill.config import Config


@dataclass(frozen=True)
class EmotionProfile:
    f0_scale: float  # pitch level relative to the speaker's habitual pitch
    f0_range: float  # excursion of the contour, semitones
    contour: str  # overall shape: fall, rise, rise_fall, flat
    rate: float  # speaking-rate factor (syllables per second)
    loudness_db: float  # level relative to neutral speech
    closure: float  # Rosenberg closing phase: short = pressed voice, flat tilt
    jitter: float  # relative f0 perturbation per cycle
    shimmer: float  # relative amplitude perturbation per cycle
    breath: float  # aspiration noise level


NEUTRAL = EmotionProfile(1.0, 3.0, "fall", 1.0, 0.0, 0.22, 0.006, 0.04, 0.05)

# Stable order: a clip's seed uses the index here, whatever subset is generated.
EMOTIONS: dict[str, EmotionProfile] = {
    "neutral": NEUTRAL,
    "angry": EmotionProfile(1.32, 7.0, "fall", 1.22, 7.0, 0.10, 0.010, 0.06, 0.03),
    "happy": EmotionProfile(1.28, 8.5, "rise_fall", 1.12, 3.5, 0.16, 0.008, 0.05, 0.05),
    "sad": EmotionProfile(0.86, 1.5, "fall", 0.74, -6.0, 0.32, 0.009, 0.06, 0.16),
    "fearful": EmotionProfile(1.42, 5.0, "rise_fall", 1.28, -1.0, 0.20, 0.030, 0.10, 0.10),
    "surprised": EmotionProfile(1.30, 10.0, "rise", 1.05, 2.5, 0.17, 0.008, 0.05, 0.05),
    "disgust": EmotionProfile(0.92, 4.0, "fall", 0.80, 0.5, 0.24, 0.024, 0.12, 0.08),
    "calm": EmotionProfile(0.93, 2.0, "flat", 0.84, -4.0, 0.28, 0.004, 0.03, 0.09),
}

# (F1, F2, F3) in Hz for an average adult vocal tract.
VOWELS = np.array([[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]])
BANDWIDTHS = np.array([90.0, 110.0, 170.0])


class SynthConfig(Config):
    """Size and shape of the synthetic corpus."""

    seed: int = Field(0, description="Seed: the same seed gives byte-identical files.")
    speakers: int = Field(12, ge=2, description="Number of speakers (alternating lower and higher voices).")
    emotions: list[str] = Field(
        default_factory=lambda: ["angry", "happy", "neutral", "sad"],
        description=f"Emotions to generate, from {list(EMOTIONS)}.",
    )
    utterances: int = Field(10, ge=1, description="Utterances per speaker and emotion.")
    min_seconds: float = Field(1.5, gt=0, description="Shortest clip, seconds.")
    max_seconds: float = Field(3.5, gt=0, description="Longest clip, seconds.")
    sample_rate: int = Field(16000, ge=8000, description="Sample rate of the written files, Hz.")
    workers: int | None = Field(None, ge=1, description="Processes (default: all cores).")

    @field_validator("emotions")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e not in EMOTIONS]
        if unknown:
            raise ValueError(f"unknown emotions {unknown}; choose from {list(EMOTIONS)}")
        if len(set(value)) != len(value) or len(value) < 2:
            raise ValueError(f"need at least 2 distinct emotions, got {value}")
        return value

    @model_validator(mode="after")
    def _durations(self) -> "SynthConfig":
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds ({self.min_seconds}) is larger than max_seconds ({self.max_seconds})")
        return self


@dataclass(frozen=True)
class Speaker:
    f0: float  # habitual pitch, Hz
    vtl: float  # formant scale (1 / vocal-tract length ratio)
    rate: float  # syllables per second
    breath: float  # breathiness factor
    gain_db: float  # level


def speaker(seed: int, index: int) -> Speaker:
    rng = np.random.default_rng([seed, index, 7919])
    low = index % 2 == 0  # alternate lower- and higher-pitched voices
    return Speaker(
        f0=float(rng.normal(112, 14) if low else rng.normal(205, 22)),
        vtl=float(rng.uniform(0.88, 1.0) if low else rng.uniform(1.05, 1.2)),
        rate=float(rng.uniform(3.8, 5.2)),
        breath=float(rng.uniform(0.6, 1.6)),
        gain_db=float(rng.uniform(-3, 3)),
    )


def _blend(emotion: EmotionProfile, intensity: float) -> EmotionProfile:
    """Neutral speech moved ``intensity`` (0..1) of the way towards ``emotion``."""
    values = {}
    for f in fields(EmotionProfile):
        a, b = getattr(NEUTRAL, f.name), getattr(emotion, f.name)
        values[f.name] = b if isinstance(b, str) else a + intensity * (b - a)
    return EmotionProfile(**values)


def _smooth_noise(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    noise = rng.standard_normal(n + width)
    kernel = np.hanning(width + 2)[1:-1]
    out = np.convolve(noise, kernel / np.sqrt((kernel**2).sum()), mode="same")[:n]
    return out


def _contour(shape: str, t: np.ndarray, semitones: float) -> np.ndarray:
    x = t / max(t[-1], 1e-9)
    if shape == "fall":
        return semitones * (0.5 - x)
    if shape == "rise":
        return semitones * (x - 0.6)
    if shape == "rise_fall":
        return semitones * (np.sin(np.pi * x) - 0.4)
    return np.zeros_like(t)


def _resonator(freq: float, bandwidth: float, rate: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.exp(-np.pi * bandwidth / rate)
    theta = 2 * np.pi * freq / rate
    a = np.array([1.0, -2 * r * np.cos(theta), r * r])
    return np.array([a.sum()]), a  # unity gain at 0 Hz


def synthesize_clip(seed: int, spk_index: int, emotion: str, index: int, cfg: SynthConfig) -> np.ndarray:
    """One clip, mono float32 at ``cfg.sample_rate``."""
    rate = cfg.sample_rate
    spk = speaker(seed, spk_index)
    rng = np.random.default_rng([seed, spk_index, list(EMOTIONS).index(emotion), index])
    intensity = float(rng.uniform(0.35, 1.0))
    prof = _blend(EMOTIONS[emotion], intensity)
    n = int(rng.uniform(cfg.min_seconds, cfg.max_seconds) * rate)
    t = np.arange(n) / rate

    # syllables: durations around 1/rate, some followed by pauses
    syl_rate = spk.rate * prof.rate * float(rng.uniform(0.9, 1.1))
    pos, voiced = 0, []
    while pos < n:
        length = int(rng.gamma(9.0, 1.0 / (9.0 * syl_rate)) * rate)
        length = max(length, int(0.06 * rate))
        gap = int(rng.uniform(0.05, 0.16) * rate) if rng.random() < 0.18 else int(0.012 * rate)
        voiced.append((pos, min(n, pos + length)))
        pos += length + gap
    envelope = np.zeros(n)
    vowel_weights = np.zeros((len(VOWELS), n))
    for start, stop in voiced:
        m = stop - start
        if m <= 4:
            continue
        accent = float(rng.uniform(0.6, 1.0))
        envelope[start:stop] = accent * np.sin(np.pi * np.arange(m) / m) ** 0.6
        vowel_weights[rng.integers(len(VOWELS)), start:stop] = 1.0
    vowel_weights[0, vowel_weights.sum(axis=0) == 0] = 1.0

    # f0: habitual pitch x emotion level, contour, per-syllable accents, jitter
    base = spk.f0 * prof.f0_scale * 2 ** (float(rng.normal(0, 1.0)) / 12)
    semis = _contour(prof.contour, t, prof.f0_range) + 0.35 * prof.f0_range * _smooth_noise(rng, n, int(0.25 * rate))
    f0 = base * 2 ** (semis / 12)
    f0 *= 1 + prof.jitter * _smooth_noise(rng, n, max(4, int(rate / base)))
    f0 = np.clip(f0, 60, 600)

    # glottal source: Rosenberg pulse derivative, shimmer, aspiration
    phase = np.cumsum(f0 / rate) % 1.0
    open_, close = 0.42, prof.closure
    pulse = np.where(
        phase < open_,
        0.5 * (1 - np.cos(np.pi * phase / open_)),
        np.where(phase < open_ + close, np.cos(0.5 * np.pi * (phase - open_) / close), 0.0),
    )
    source = np.diff(pulse, prepend=pulse[0]) * rate / base
    source *= 1 + prof.shimmer * _smooth_noise(rng, n, max(4, int(rate / base)))
    source += prof.breath * spk.breath * 0.6 * rng.standard_normal(n)
    voiced_part = source * envelope

    # vocal tract: a formant filter per vowel, cross-faded by syllable
    fade = np.hanning(int(0.03 * rate))
    fade /= fade.sum()
    out = np.zeros(n)
    for v, formants in enumerate(VOWELS):
        w = np.convolve(vowel_weights[v], fade, mode="same")
        if not w.any():
            continue
        y = voiced_part
        for freq, bw in zip(formants * spk.vtl, BANDWIDTHS):
            b, a = _resonator(float(min(freq, 0.45 * rate)), float(bw), rate)
            y = lfilter(b, a, y)
        out += w * y

    # vocal effort tilts the spectrum: pressed voices are brighter, soft ones darker
    low = lfilter([0.2], [1.0, -0.8], out)
    out = out + float(np.clip((NEUTRAL.closure - prof.closure) * 8, -0.8, 1.5)) * (out - low)

    # consonant-like noise bursts in the gaps
    burst = rng.standard_normal(n) * (envelope == 0) * 0.15
    burst = lfilter([1.0, -0.95], [1.0], burst)  # high-frequency emphasis, like a fricative
    out += burst * _smooth_noise(rng, n, int(0.04 * rate)).clip(0, None)

    # level: emotion and speaker loudness (+-3 dB per clip), background noise, no clipping
    out -= out.mean()
    rms = np.sqrt(np.mean(out**2)) + 1e-12
    level_db = prof.loudness_db + spk.gain_db + float(rng.uniform(-3, 3))
    out *= 0.05 * 10 ** (level_db / 20) / rms
    snr_db = float(rng.uniform(15, 35))
    out += rng.standard_normal(n) * np.sqrt(np.mean(out**2)) * 10 ** (-snr_db / 20)
    peak = np.abs(out).max()
    if peak > 0.95:
        out *= 0.95 / peak
    return out.astype(np.float32)


def _write_clip(task: tuple) -> str:
    out_dir, rel, seed, spk_index, emotion, index, cfg = task
    wave = synthesize_clip(seed, spk_index, emotion, index, cfg)
    buf = io.BytesIO()
    sf.write(buf, wave, cfg.sample_rate, format="WAV", subtype="PCM_16")
    path = Path(out_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return rel


def synthesize(out_dir: str | Path, cfg: SynthConfig = SynthConfig(), progress: bool = False) -> Path:
    """Write ``out_dir/wav/<speaker>/<speaker>_<emotion>_<nn>.wav`` and ``out_dir/manifest.csv``."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks, rows = [], []
    for s in range(cfg.speakers):
        spk = f"spk{s + 1:02d}"
        for emotion in cfg.emotions:
            for i in range(cfg.utterances):
                rel = f"wav/{spk}/{spk}_{emotion}_{i:02d}.wav"
                tasks.append((str(out_dir), rel, cfg.seed, s, emotion, i, cfg))
                rows.append((rel, emotion, spk))
    workers = cfg.workers or os.cpu_count() or 1
    bar = tqdm(total=len(tasks), desc="synth", unit="clip", disable=not progress, file=sys.stderr)
    if workers == 1 or len(tasks) < 16:
        for task in tasks:
            _write_clip(task)
            bar.update()
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for _ in pool.map(_write_clip, tasks, chunksize=8):
                bar.update()
    bar.close()
    manifest = out_dir / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label", "speaker"])
        writer.writerows(sorted(rows))
    return manifest
