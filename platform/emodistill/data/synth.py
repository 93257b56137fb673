"""`emodistill synth OUT_DIR`: a synthetic acted-emotion speech corpus (the embedded default).

No recordings can be downloaded here, so the demo and the tests speak to themselves: every
clip is voiced, speech-like sound from a classic source-filter model, in pure numpy/scipy.

Signal model (one clip)
-----------------------
::

    syllables     onset consonant + vowel nucleus, durations drawn around 1 / speaking rate,
                  some followed by a pause; stressed syllables are louder and carry a pitch
                  accent. Consonants are fricative noise, a stop (closure + burst) or voiced.
    f0 contour    speaker's habitual pitch x emotion level, a global shape (declining "fall",
                  final "rise", "rise_fall" hat, "flat") spanning the emotion's pitch range,
                  accents on stressed syllables, slow drift and, for irregular emotions, a
                  fast wobble; computed at 200 frames/s and interpolated to samples
    glottal source  Rosenberg pulses (derivative: flow x lip radiation) following f0, with
                  jitter (a random perturbation of each cycle's period) and shimmer (of each
                  cycle's amplitude); creaky syllables drop the pitch, raise jitter and
                  alternate cycle amplitudes (vocal fry). The pulse's closing phase follows
                  vocal effort: abrupt closure (pressed, loud voice) gives strong harmonics
    + aspiration  breath noise, modulated by the glottal opening, stronger in breathy voices
    x envelope    the syllable amplitude envelope (voiced during nuclei and voiced onsets)
    -> vocal tract  four formant resonators (scipy sosfilt) per vowel (/a e i o u/ and schwa);
                  vowels change per syllable with 25 ms cross-fades; formants scale with the
                  speaker's vocal-tract length (x0.85..1.2), the emotion (smiling raises them,
                  effort raises F1) and a little per-utterance variation
    -> spectral tilt  a one-pole shelf: high-frequency boost for effortful speech, a darker,
                  steeper spectrum for lax speech
    + consonants  band-passed fricative noise and stop bursts in the syllable onsets
    + background  pinkish noise at 12..35 dB SNR
    -> level      peak-normalised to a random level below full scale (never clipping) that
                  keeps part of the emotion's loudness: -16 dBFS + emotion and speaker
                  loudness + a random gain within +-6 dB, at most -1 dBFS

Emotions move the acoustic correlates that acted emotions are known for (see ``EMOTIONS``):
angry = high, wide, falling pitch, fast, loud, pressed (flat tilt); happy = high, widest
rise-fall pitch, fairly fast, moderately loud, smiling formants; sad = low, narrow, falling,
slow, quiet, lax (steep tilt), breathy, long pauses; neutral = the middle; fearful = high
pitch, high jitter, fast, irregular rhythm and pitch; surprised = high with a strong final
rise; disgust = low-ish, slow, creaky (high jitter and shimmer at low pitch); calm = low-mid,
narrow, slow, soft. Speakers alternate lower- and higher-pitched voices and differ in base
pitch, vocal-tract length, speaking rate, breathiness, pitch expressiveness, effort and level.

Each clip draws an emotion intensity between half and fully acted (the profile is blended
with neutral speech accordingly), a duration in [min_seconds, max_seconds], a pitch
offset, a rate factor, a level and a noise SNR, so the classes overlap: a speaker-independent
split is meaningful and a shallow model on simple features is far from perfect.

Other corpora (``SynthConfig`` fields; the defaults make the demo corpus above)
------------------------------------------------------------------------------------
- ``prosody: alt``  another acting style (``EMOTIONS_ALT``): cold anger (loud and pressed but
  slow, flat and only a little higher), happy with rising contours and a lively rhythm, sad
  trembling and creaky rather than low, fear quiet, breathy, fast and irregular, ... The
  cues a model learns on the demo corpus do not transfer as they are.
- ``voices: wide``  another speaker population: habitual pitch anywhere in 85..330 Hz
  (children's voices included, no alternation), vocal tract x0.82..1.3, speaking rates
  2.8..6 syllables/s, wider breathiness, loudness, effort and expressiveness, and each
  speaker acts with their own strength (x0.6..1.1 of the intensity).
- ``noise``  the background: ``pink`` (default), ``white`` or ``babble`` (speech-shaped
  noise with the syllabic modulation of four talkers), at ``snr_db`` (a range, per clip).
- ``reverb_rt60``  a room per speaker (RT60 drawn from the range; a synthetic impulse
  response of decaying noise) applied before the background noise; off by default.

Deterministic: a clip's random stream is seeded by (seed, speaker, emotion, index) alone and
a speaker's traits by (seed, speaker), so a clip does not depend on which other clips are
generated. Generation is vectorised (array passes and a few filter calls per clip, a few
threads over clips): the default corpus (12 speakers x 4 emotions x 10 clips of 1.5-3.5 s)
takes about 5-7 s on 2 CPU cores.
"""

from __future__ import annotations

import csv
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from pydantic import Field, field_validator, model_validator
from scipy.signal import lfilter, sosfilt

from emodistill.config import Config


@dataclass(frozen=True)
class EmotionProfile:
    """How an emotion moves a voice away from the speaker's neutral speech."""

    f0_scale: float  # pitch level, ratio to the speaker's habitual pitch
    f0_range: float  # pitch excursion of the contour and accents, semitones
    contour: str  # global pitch shape: "fall", "rise", "rise_fall" or "flat"
    rate: float  # speaking rate, ratio to the speaker's
    loudness_db: float  # level relative to neutral speech
    effort: float  # vocal effort, -1 (lax, dark) .. +1 (pressed, bright): glottal closure, tilt, F1
    jitter: float  # cycle-to-cycle period perturbation, relative standard deviation
    shimmer: float  # cycle-to-cycle amplitude perturbation, relative standard deviation
    breath: float  # aspiration noise relative to the voiced source
    creak: float  # share of syllables in creaky voice (vocal fry)
    irregularity: float  # fast pitch wobble (semitones) and uneven syllable durations
    pauses: float  # probability of a pause after a syllable
    formant_shift: float  # formant ratio (smiling shortens the vocal tract)


CONTOURS = ("fall", "rise", "rise_fall", "flat")

NEUTRAL = EmotionProfile(
    f0_scale=1.0, f0_range=4.0, contour="fall", rate=1.0, loudness_db=0.0, effort=0.0, jitter=0.006,
    shimmer=0.04, breath=0.10, creak=0.0, irregularity=0.0, pauses=0.15, formant_shift=1.0,
)  # fmt: skip

# Stable order: a clip's seed uses the index here, whatever subset is generated.
EMOTIONS: dict[str, EmotionProfile] = {
    "neutral": NEUTRAL,
    "angry": EmotionProfile(
        f0_scale=1.32, f0_range=7.0, contour="fall", rate=1.22, loudness_db=10.0, effort=1.0, jitter=0.008,
        shimmer=0.05, breath=0.06, creak=0.0, irregularity=0.0, pauses=0.12, formant_shift=1.02,
    ),
    "happy": EmotionProfile(
        f0_scale=1.28, f0_range=10.0, contour="rise_fall", rate=1.08, loudness_db=4.0, effort=0.3, jitter=0.006,
        shimmer=0.04, breath=0.10, creak=0.0, irregularity=0.0, pauses=0.12, formant_shift=1.05,
    ),
    "sad": EmotionProfile(
        f0_scale=0.84, f0_range=1.8, contour="fall", rate=0.72, loudness_db=-9.0, effort=-0.9, jitter=0.010,
        shimmer=0.06, breath=0.30, creak=0.10, irregularity=0.0, pauses=0.35, formant_shift=0.97,
    ),
    "fearful": EmotionProfile(
        f0_scale=1.42, f0_range=6.0, contour="rise_fall", rate=1.25, loudness_db=0.0, effort=0.2, jitter=0.030,
        shimmer=0.10, breath=0.18, creak=0.0, irregularity=1.0, pauses=0.30, formant_shift=1.02,
    ),
    "surprised": EmotionProfile(
        f0_scale=1.32, f0_range=11.0, contour="rise", rate=1.05, loudness_db=3.0, effort=0.4, jitter=0.006,
        shimmer=0.04, breath=0.10, creak=0.0, irregularity=0.0, pauses=0.12, formant_shift=1.03,
    ),
    "disgust": EmotionProfile(
        f0_scale=0.90, f0_range=4.5, contour="fall", rate=0.80, loudness_db=0.0, effort=0.1, jitter=0.025,
        shimmer=0.12, breath=0.12, creak=0.55, irregularity=0.2, pauses=0.25, formant_shift=0.98,
    ),
    "calm": EmotionProfile(
        f0_scale=0.93, f0_range=2.2, contour="flat", rate=0.84, loudness_db=-4.0, effort=-0.5, jitter=0.004,
        shimmer=0.03, breath=0.16, creak=0.0, irregularity=0.0, pauses=0.22, formant_shift=0.99,
    ),
}
_EMOTION_INDEX = {name: i for i, name in enumerate(EMOTIONS)}

# Another acting style for the same labels (``prosody: alt``): the cues point elsewhere.
EMOTIONS_ALT: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile(
        f0_scale=1.0, f0_range=3.5, contour="rise_fall", rate=1.0, loudness_db=0.0, effort=0.0, jitter=0.007,
        shimmer=0.045, breath=0.12, creak=0.05, irregularity=0.1, pauses=0.18, formant_shift=1.0,
    ),
    "angry": EmotionProfile(  # cold anger: pressed and loud, but slow, flat and barely higher
        f0_scale=1.08, f0_range=2.5, contour="flat", rate=0.9, loudness_db=9.0, effort=1.1, jitter=0.007,
        shimmer=0.05, breath=0.04, creak=0.12, irregularity=0.0, pauses=0.28, formant_shift=1.0,
    ),
    "happy": EmotionProfile(  # rising, lively, smiling
        f0_scale=1.18, f0_range=8.0, contour="rise", rate=1.15, loudness_db=2.0, effort=0.2, jitter=0.006,
        shimmer=0.04, breath=0.12, creak=0.0, irregularity=0.35, pauses=0.08, formant_shift=1.07,
    ),
    "sad": EmotionProfile(  # trembling and creaky rather than low and quiet
        f0_scale=0.93, f0_range=3.0, contour="rise_fall", rate=0.8, loudness_db=-3.0, effort=-0.6, jitter=0.022,
        shimmer=0.09, breath=0.35, creak=0.3, irregularity=0.45, pauses=0.4, formant_shift=0.97,
    ),
    "fearful": EmotionProfile(  # quiet, breathy, fast and irregular
        f0_scale=1.25, f0_range=4.0, contour="rise", rate=1.35, loudness_db=-3.0, effort=-0.3, jitter=0.035,
        shimmer=0.1, breath=0.45, creak=0.0, irregularity=1.2, pauses=0.1, formant_shift=1.03,
    ),
    "surprised": EmotionProfile(
        f0_scale=1.22, f0_range=12.0, contour="rise_fall", rate=0.95, loudness_db=4.0, effort=0.3, jitter=0.006,
        shimmer=0.04, breath=0.15, creak=0.0, irregularity=0.0, pauses=0.2, formant_shift=1.03,
    ),
    "disgust": EmotionProfile(
        f0_scale=0.86, f0_range=6.0, contour="fall", rate=0.75, loudness_db=-1.0, effort=0.3, jitter=0.02,
        shimmer=0.1, breath=0.15, creak=0.45, irregularity=0.1, pauses=0.3, formant_shift=0.96,
    ),
    "calm": EmotionProfile(
        f0_scale=0.96, f0_range=2.5, contour="fall", rate=0.9, loudness_db=-2.0, effort=-0.3, jitter=0.005,
        shimmer=0.03, breath=0.2, creak=0.0, irregularity=0.0, pauses=0.25, formant_shift=0.99,
    ),
}  # fmt: skip
PROSODIES: dict[str, dict[str, EmotionProfile]] = {"demo": EMOTIONS, "alt": EMOTIONS_ALT}

# (F1, F2, F3, F4) in Hz for an average adult vocal tract: /a e i o u/ and schwa.
VOWELS = np.array(
    [
        [730, 1090, 2440, 3400],
        [530, 1840, 2480, 3500],
        [300, 2250, 3000, 3700],
        [570, 840, 2410, 3300],
        [320, 870, 2240, 3300],
        [500, 1500, 2500, 3500],
    ],
    dtype=float,
)
BANDWIDTHS = np.array([80.0, 100.0, 150.0, 220.0])
FRAME_RATE = 200  # control frames per second (f0 contour, vowel weights)


class SynthConfig(Config):
    """Size and shape of the synthetic corpus."""

    seed: int = Field(0, ge=0, description="Seed: the same seed gives byte-identical files and manifest.")
    speakers: int = Field(12, ge=2, description="Number of speakers (alternating lower- and higher-pitched voices).")
    emotions: list[str] = Field(
        default_factory=lambda: ["angry", "happy", "neutral", "sad"],
        description=f"Emotions to generate (the labels), from {list(EMOTIONS)}.",
    )
    utterances: int = Field(10, ge=1, description="Utterances per speaker and emotion.")
    min_seconds: float = Field(1.5, gt=0, description="Shortest clip, seconds.")
    max_seconds: float = Field(3.5, gt=0, description="Longest clip, seconds.")
    sample_rate: int = Field(16000, ge=8000, le=192000, description="Sample rate of the written WAV files, Hz.")
    prosody: Literal["demo", "alt"] = Field(
        "demo", description="Acting style: how emotions move the voice (EMOTIONS or EMOTIONS_ALT)."
    )
    voices: Literal["demo", "wide"] = Field(
        "demo", description="Speaker population: demo (alternating lower/higher voices) or wide (85..330 Hz, "
        "wider rates and voice qualities, per-speaker acting strength).",
    )
    noise: Literal["pink", "white", "babble"] = Field("pink", description="Background noise added to every clip.")
    snr_db: tuple[float, float] = Field((12.0, 35.0), description="Range of the background's SNR, dB (uniform per clip).")
    reverb_rt60: tuple[float, float] | None = Field(
        None, description="Reverberation: each speaker's room has an RT60 drawn from this range, seconds (None: dry)."
    )

    @field_validator("emotions")
    @classmethod
    def _known_emotions(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e not in EMOTIONS]
        if unknown:
            raise ValueError(f"unknown emotions {unknown}; choose from {list(EMOTIONS)}")
        if len(set(value)) != len(value) or len(value) < 2:
            raise ValueError(f"need at least 2 distinct emotions, got {value}")
        return value

    @model_validator(mode="after")
    def _durations(self) -> SynthConfig:
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds ({self.min_seconds}) is larger than max_seconds ({self.max_seconds})")
        for name in ("snr_db", "reverb_rt60"):
            value = getattr(self, name)
            if value is not None and value[0] > value[1]:
                raise ValueError(f"{name}: the low end {value[0]} is above the high end {value[1]}")
        if self.reverb_rt60 is not None and self.reverb_rt60[0] <= 0:
            raise ValueError(f"reverb_rt60 must be positive, got {list(self.reverb_rt60)}")
        return self


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker's voice."""

    f0: float  # habitual pitch, Hz
    formants: float  # formant scale (inverse vocal-tract length ratio), 0.85..1.2
    rate: float  # syllables per second in neutral speech
    breath: float  # breathiness factor
    gain_db: float  # level
    expressiveness: float  # pitch-range factor
    effort: float  # habitual effort offset
    acting: float = 1.0  # how strongly the speaker acts: scales the emotion intensity


def speaker_traits(seed: int, index: int, voices: str = "demo") -> Speaker:
    """Speaker ``index`` (0-based) of corpus ``seed``: even indices lower, odd higher voices
    (``voices="wide"``: the wide population, see the module docstring)."""
    if voices == "wide":
        return _wide_speaker(seed, index)
    rng = np.random.default_rng([seed, 0, index])
    higher = index % 2 == 1
    return Speaker(
        f0=float(np.exp(rng.uniform(*np.log([175.0, 245.0] if higher else [95.0, 135.0])))),  # log-uniform
        formants=float(rng.uniform(1.03, 1.2) if higher else rng.uniform(0.85, 1.0)),
        rate=float(rng.uniform(3.6, 5.0)),
        breath=float(rng.uniform(0.6, 1.6)),
        gain_db=float(rng.uniform(-3.0, 3.0)),
        expressiveness=float(rng.uniform(0.7, 1.3)),
        effort=float(rng.uniform(-0.25, 0.25)),
    )


def _wide_speaker(seed: int, index: int) -> Speaker:
    rng = np.random.default_rng([seed, 4, index])
    f0 = float(np.exp(rng.uniform(np.log(85.0), np.log(330.0))))
    pitch = (np.log(f0) - np.log(85.0)) / (np.log(330.0) - np.log(85.0))  # 0..1: longer to shorter tracts
    return Speaker(
        f0=f0,
        formants=float(np.clip(0.82 + 0.45 * pitch + rng.normal(0.0, 0.05), 0.82, 1.3)),
        rate=float(rng.uniform(2.8, 6.0)),
        breath=float(rng.uniform(0.4, 2.2)),
        gain_db=float(rng.uniform(-5.0, 5.0)),
        expressiveness=float(rng.uniform(0.5, 1.6)),
        effort=float(rng.uniform(-0.45, 0.45)),
        acting=float(rng.uniform(0.6, 1.1)),
    )


def _blend(emotion: EmotionProfile, intensity: float, neutral: EmotionProfile = NEUTRAL) -> EmotionProfile:
    """Neutral speech moved ``intensity`` (0..1) of the way towards ``emotion``.

    Numbers are interpolated; the contour name is the emotion's (``synthesize_clip`` blends
    the contour shapes themselves with the same weight).
    """
    values = {}
    for f in fields(EmotionProfile):
        a, b = getattr(neutral, f.name), getattr(emotion, f.name)
        values[f.name] = b if isinstance(b, str) else a + intensity * (b - a)
    return EmotionProfile(**values)


def _shape(contour: str, x: np.ndarray) -> np.ndarray:
    """Global pitch shape over the utterance (x in 0..1), about one unit peak to peak."""
    if contour == "fall":
        return 0.5 - x
    if contour == "rise":
        return 1.2 * x**2 - 0.3
    if contour == "rise_fall":
        return np.sin(np.pi * x) - 0.5
    return np.zeros_like(x)


def _slow_noise(rng: np.random.Generator, t: np.ndarray, rate_hz: float) -> np.ndarray:
    """Unit-variance noise with knots every 1/rate_hz seconds, cosine-interpolated at times ``t``."""
    knots = rng.standard_normal(int(t[-1] * rate_hz) + 2)
    pos = t * rate_hz
    i = np.minimum(pos.astype(np.int64), knots.size - 2)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
    return knots[i] * (1 - w) + knots[i + 1] * w


def _resonators(freqs: np.ndarray, bandwidths: np.ndarray, rate: int) -> np.ndarray:
    """Second-order sections of a cascade of resonators, each with unity gain at 0 Hz."""
    r = np.exp(-np.pi * bandwidths / rate)
    theta = 2 * np.pi * np.minimum(freqs, 0.45 * rate) / rate
    a1, a2 = -2 * r * np.cos(theta), r * r
    gain = 1 + a1 + a2
    zeros = np.zeros_like(gain)
    return np.stack([gain, zeros, zeros, np.ones_like(gain), a1, a2], axis=1)


def _bandpass(center: float, bandwidth: float, rate: int) -> np.ndarray:
    """One band-pass resonator section (zeros at 0 Hz and Nyquist), unity gain at ``center``."""
    r = np.exp(-np.pi * bandwidth / rate)
    theta = 2 * np.pi * min(center, 0.45 * rate) / rate
    a1, a2 = -2 * r * np.cos(theta), r * r
    zi = np.exp(-1j * theta)
    gain = abs(1 + a1 * zi + a2 * zi * zi) / abs(1 - zi * zi)
    return np.array([[gain, 0.0, -gain, 1.0, a1, a2]])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def synthesize_clip(cfg: SynthConfig, speaker: int, emotion: str, index: int) -> np.ndarray:
    """Clip ``index`` of ``speaker`` (0-based) acting ``emotion``: mono float32 at ``cfg.sample_rate``."""
    sr = cfg.sample_rate
    spk = speaker_traits(cfg.seed, speaker, cfg.voices)
    table = PROSODIES[cfg.prosody]
    neutral = table["neutral"]
    rng = np.random.default_rng([cfg.seed, 1, speaker, _EMOTION_INDEX[emotion], index])

    # ---- per-utterance variation -------------------------------------------------------
    intensity = float(rng.uniform(0.5, 1.0)) * spk.acting
    p = _blend(table[emotion], intensity, neutral)
    lo, hi = int(np.ceil(cfg.min_seconds * sr)), int(np.floor(cfg.max_seconds * sr))
    n = int(rng.uniform(cfg.min_seconds, cfg.max_seconds) * sr)
    n = max(1, min(max(n, lo), hi) if lo <= hi else hi)
    seconds = n / sr
    effort = float(np.clip(p.effort + spk.effort + rng.normal(0.0, 0.15), -1.2, 1.2))
    f0_offset = float(rng.normal(0.0, 1.2))  # semitones
    pitch_range = p.f0_range * spk.expressiveness * float(rng.uniform(0.75, 1.25))
    syl_rate = spk.rate * p.rate * float(rng.uniform(0.88, 1.12))
    formant_scale = spk.formants * p.formant_shift * float(rng.uniform(0.97, 1.03))
    snr_db = float(rng.uniform(*cfg.snr_db))
    level_db = -16.0 + p.loudness_db + spk.gain_db + float(rng.uniform(-6.0, 6.0))

    # ---- syllables: onset consonant + vowel nucleus, some followed by pauses ------------
    k = int(seconds * syl_rate * 2) + 8
    shape = 8.0 / (1.0 + 3.0 * p.irregularity)
    dur = np.maximum(rng.gamma(shape, 1.0 / (shape * syl_rate), k), 0.07)
    pause = np.where(rng.random(k) < p.pauses, rng.uniform(0.08, 0.25, k), 0.0)
    starts = float(rng.uniform(0.02, 0.12)) + np.concatenate([[0.0], np.cumsum(dur + pause)[:-1]])
    cons = dur * rng.uniform(0.18, 0.38, k)
    kind = rng.choice(3, size=k, p=[0.45, 0.35, 0.20])  # 0 fricative, 1 stop, 2 voiced onset
    fric_band = rng.integers(2, size=k)  # 0 /sh/-like, 1 /s/-like
    stressed = rng.random(k) < 0.35
    accent = np.where(stressed, 1.0, rng.uniform(0.5, 0.85, k))
    accent_pitch = np.where(stressed, rng.uniform(0.5, 1.0, k), rng.uniform(-0.1, 0.25, k))
    vowel = rng.integers(len(VOWELS), size=k)
    creaky = rng.random(k) < p.creak
    creak_drop = rng.uniform(0.5, 0.7, k)

    def locate(t: np.ndarray):
        i = np.searchsorted(starts, t, side="right") - 1
        inside = i >= 0
        i = np.maximum(i, 0)
        local = t - starts[i]
        inside &= local < dur[i]
        return i, local, inside

    # ---- f0 contour at the control rate --------------------------------------------------
    tf = np.arange(int(seconds * FRAME_RATE) + 6) / FRAME_RATE
    fi, flocal, finside = locate(tf)
    x = np.clip(tf / seconds, 0.0, 1.0)
    semis = pitch_range * ((1 - intensity) * _shape(neutral.contour, x) + intensity * _shape(p.contour, x))
    bump = np.where(finside, np.sin(np.pi * np.clip(flocal / dur[fi], 0, 1)), 0.0)
    semis += 0.5 * pitch_range * accent_pitch[fi] * bump
    semis += 0.5 * _slow_noise(rng, tf, 3.0)
    semis += 1.5 * p.irregularity * _slow_noise(rng, tf, 12.0)
    f0_frames = spk.f0 * p.f0_scale * 2 ** ((semis + f0_offset) / 12)
    f0_frames *= np.where(finside & creaky[fi], creak_drop[fi], 1.0)
    f0_frames = np.clip(f0_frames, 45.0, min(700.0, 0.05 * sr))

    # vowel weights: the syllable's vowel, held through pauses, cross-faded over 25 ms
    onehot = np.zeros((len(VOWELS), tf.size))
    onehot[vowel[fi], np.arange(tf.size)] = 1.0
    kernel = np.ones(5) / 5
    weights = np.stack([np.convolve(row, kernel, mode="same") for row in onehot])

    # ---- sample-level envelopes ----------------------------------------------------------
    t = np.arange(n) / sr
    si, local, inside = locate(t)
    c = cons[si]
    u = (local - c) / (dur[si] - c)
    nucleus = inside & (u >= 0)
    onset = inside & (u < 0)
    env = np.where(nucleus, np.sin(np.pi * np.clip(u, 0, 1)) ** 0.6 * accent[si], 0.0)
    voiced_onset = inside & (kind[si] == 2)  # a glide into the vowel: no gap in the voicing
    env = np.where(voiced_onset & onset, 0.3 * accent[si] * np.sin(0.5 * np.pi * local / c), env)
    env = np.where(voiced_onset & nucleus & (u < 0.5), np.maximum(env, 0.3 * accent[si]), env)
    fric_env = np.where(onset & (kind[si] == 0), np.sin(np.pi * np.clip(local / c, 0, 1)), 0.0)
    burst_len = np.minimum(0.015, 0.4 * c)
    into_burst = local - (c - burst_len)
    burst_env = np.where(onset & (kind[si] == 1) & (into_burst >= 0), np.exp(-into_burst / 0.004), 0.0)
    creak_mask = (inside & creaky[si]).astype(float)

    # ---- glottal source: Rosenberg pulses with jitter and shimmer ------------------------
    f0 = np.interp(t, tf, f0_frames)
    jitter = p.jitter * (1 + 2 * creak_mask)
    nominal = np.cumsum(f0) / sr
    z = np.clip(rng.standard_normal(int(nominal[-1]) + 2), -2.5, 2.5)
    f0 = f0 * (1 + jitter * z[nominal.astype(np.int64)])
    phase = np.cumsum(f0) / sr
    cycle = phase.astype(np.int64)
    frac = phase - cycle
    shimmer = np.clip(rng.standard_normal(cycle[-1] + 1), -2.5, 2.5)
    amp = 1 + p.shimmer * (1 + creak_mask) * shimmer[cycle]
    amp *= 1 - 0.5 * creak_mask * (cycle % 2)
    t_open = 0.40
    t_close = float(np.interp(effort, [-1.0, 0.0, 1.0], [0.30, 0.18, 0.07]))
    flow = np.where(
        frac < t_open,
        0.5 * (1 - np.cos(np.pi * frac / t_open)),
        np.where(frac < t_open + t_close, np.cos(0.5 * np.pi * np.minimum(frac - t_open, t_close) / t_close), 0.0),
    )
    source = np.diff(flow, prepend=0.0) * (sr / f0) * amp
    source /= _rms(source) + 1e-12
    aspiration = rng.standard_normal(n) * (0.4 + 0.6 * (frac < t_open + t_close))
    breath = p.breath * spk.breath * (1 + 0.5 * max(-effort, 0.0))
    source += breath * aspiration
    excitation = source * env

    # ---- vocal tract: formant filter per vowel, cross-faded ------------------------------
    voiced = np.zeros(n)
    f1_raise = 1 + 0.08 * max(effort, 0.0)
    for v in np.unique(vowel[fi]):
        sos = _resonators(VOWELS[v] * formant_scale * np.array([f1_raise, 1, 1, 1]), BANDWIDTHS, sr)
        # filter only the stretches where this vowel has weight: each starts from rest while
        # its weight fades in, which hides the filter's start-up (formants ring for < 10 ms)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], (weights[v] > 0).astype(np.int8), [0]])))
        for first, stop in edges.reshape(-1, 2):
            a = 0 if first == 0 else int(np.ceil(tf[first - 1] * sr))
            b = n if stop >= tf.size else min(n, int(tf[stop] * sr) + 1)
            if a < b:
                voiced[a:b] += np.interp(t[a:b], tf, weights[v]) * sosfilt(sos, excitation[a:b])

    # vocal effort tilts the spectrum: a one-pole shelf around 800 Hz
    pole = np.exp(-2 * np.pi * 800 / sr)
    low = lfilter([1 - pole], [1, -pole], voiced)
    voiced += float(np.clip(1.5 * effort, -0.9, 1.8)) * (voiced - low)
    voiced_rms = _rms(voiced[env > 0.05]) or _rms(voiced) or 1.0

    # ---- consonants: fricative noise and stop bursts -------------------------------------
    noise = rng.standard_normal(n)
    sh = sosfilt(_bandpass(2800 * formant_scale, 1200, sr), noise)
    s = sosfilt(_bandpass(min(5500 * formant_scale, 0.42 * sr), 2500, sr), noise)
    band = fric_band[si]
    fricative = fric_env * np.where(band == 0, sh / (_rms(sh) + 1e-12), s / (_rms(s) + 1e-12))
    burst = burst_env * np.diff(rng.standard_normal(n), prepend=0.0)
    consonant_db = float(rng.uniform(-18.0, -9.0)) + 4 * effort
    out = voiced + voiced_rms * 10 ** (consonant_db / 20) * (fricative + 0.7 * burst)

    # ---- room, background noise, level ------------------------------------------------------
    if cfg.reverb_rt60 is not None:
        out = _reverberate(out, _room(cfg, speaker), sr)
    active = (env > 0.05) | (fric_env > 0.05)
    signal_rms = _rms(out[active]) or _rms(out) or 1.0
    background = _background(cfg.noise, rng, n, sr)
    out += background / (_rms(background) + 1e-12) * signal_rms * 10 ** (-snr_db / 20)
    out -= out.mean()
    peak = float(np.abs(out).max()) or 1.0
    out *= 10 ** (min(level_db, -1.0) / 20) / peak
    return out.astype(np.float32)


def _background(kind: str, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Background noise of ``kind`` (any level: the caller scales it to the SNR)."""
    if kind == "pink":  # the demo corpus' pinkish noise (one-pole low-pass of white noise)
        return lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    if kind == "white":
        return rng.standard_normal(n)
    # babble: four talkers of speech-shaped noise (energy around 300..3000 Hz), each
    # switched on and off by its own syllable-rate envelope
    t = np.arange(n) / sr
    shaped = sosfilt(_bandpass(800.0, 1400.0, sr), rng.standard_normal((4, n)), axis=1)
    rates = rng.uniform(3.0, 6.0, 4)
    envelopes = np.stack([np.clip(_slow_noise(rng, t, r) + 0.3, 0.0, None) for r in rates])
    return (shaped * envelopes).sum(axis=0)


def _room(cfg: SynthConfig, speaker: int) -> np.ndarray:
    """The impulse response of ``speaker``'s room: the direct path, then decaying noise."""
    rng = np.random.default_rng([cfg.seed, 3, speaker])
    rt60 = float(rng.uniform(*cfg.reverb_rt60))
    t = np.arange(int(rt60 * cfg.sample_rate)) / cfg.sample_rate
    tail = rng.standard_normal(t.size) * 10 ** (-3 * t / rt60)  # -60 dB at rt60
    tail[: int(0.003 * cfg.sample_rate)] = 0.0  # first reflections after ~3 ms
    direct_to_reverb = float(rng.uniform(0.25, 0.6))
    response = direct_to_reverb * tail / (np.sqrt(np.sum(tail**2)) + 1e-12)
    response[0] = 1.0
    return response


def _reverberate(x: np.ndarray, response: np.ndarray, sr: int) -> np.ndarray:
    from scipy.signal import fftconvolve

    return fftconvolve(x, response)[: x.size]


def speaker_id(speaker: int) -> str:
    """``spk01`` for speaker 0."""
    return f"spk{speaker + 1:02d}"


def clip_path(speaker: int, emotion: str, index: int) -> str:
    """Path of a clip relative to the corpus root (speaker and index 0-based)."""
    spk = speaker_id(speaker)
    return f"wav/{spk}/{spk}_{emotion}_{index:02d}.wav"


def synthesize(out_dir: str | Path, cfg: SynthConfig = SynthConfig(), progress: bool = False) -> Path:
    """Write ``out_dir/wav/<speaker>/<speaker>_<emotion>_<nn>.wav`` (16-bit PCM) and ``out_dir/manifest.csv``.

    The manifest has the columns ``path,label,speaker`` (paths relative to ``out_dir``), rows
    sorted by path. Returns the manifest's path. Clips are made by a few threads (numpy and
    scipy's filters release the GIL); each clip is independent, so the output is the same.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(s, e, i) for s in range(cfg.speakers) for e in cfg.emotions for i in range(cfg.utterances)]

    def write(job: tuple[int, str, int]) -> tuple[str, str, str]:
        s, e, i = job
        rel = clip_path(s, e, i)
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synthesize_clip(cfg, s, e, i), cfg.sample_rate, format="WAV", subtype="PCM_16")
        return rel, e, speaker_id(s)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        done = pool.map(write, jobs)
        rows = sorted(tqdm(done, total=len(jobs), desc="synth", unit="clip", disable=not progress, file=sys.stderr))
    manifest = out_dir / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label", "speaker"])
        writer.writerows(rows)
    return manifest
