"""Training-time augmentation of waveforms: pure functions of (clip, parameters, rng).

Each function takes one mono float32 clip (its valid samples only, no padding) and returns a
new array; randomness comes only from the ``numpy.random.Generator`` passed in, so a seeded
run augments identically every time, whatever process it runs in.

    speed      resample by a factor: tempo, pitch and formants move together (Ko et al. 2015)
    reverb     convolve with a synthetic room response (exponentially decaying noise)
    noise      white, pink or brown noise at a random SNR relative to the clip's active level
    gain       a random level change in dB
    time_mask  zero a few short spans (SpecAugment's time masking, on the waveform)

One more lives in the log-mel front-end, because it acts on the spectrum: ``vtlp``,
vocal-tract-length perturbation (``emodistill.model.frontend``); ``apply_vtlp`` switches
it on in a model the trainer builds.

``augment_clip`` chains them as an :class:`AugmentConfig` says (the ``augment:`` section of
the training config); ``augment_batch`` applies it to a padded batch ``(input_values,
attention_mask)`` and pads again, so padding stays zero and the mask follows the new
lengths. Validation, evaluation and serving never augment.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, field_validator

from emodistill.config import Config
from emodistill.data.batching import pad_batch

NOISE_COLORS = ("white", "pink", "brown")


class AugmentConfig(Config):
    """Which augmentations a training clip gets, and how strong; all off by default."""

    speed: tuple[float, float] = Field(
        (1.0, 1.0), description="Speed-perturbation factor range, drawn uniformly per clip (1.0 = off; "
        "0.9..1.1 is the usual choice): >1 is faster and higher-pitched.",
    )
    speed_prob: float = Field(1.0, ge=0.0, le=1.0, description="Probability that a clip is speed-perturbed.")
    noise_prob: float = Field(0.0, ge=0.0, le=1.0, description="Probability that a clip gets additive noise.")
    noise_snr_db: tuple[float, float] = Field(
        (5.0, 30.0), description="Signal-to-noise ratio range of the added noise, dB (uniform per clip)."
    )
    noise_colors: list[str] = Field(
        default_factory=lambda: list(NOISE_COLORS), description=f"Noise spectra drawn from, any of {list(NOISE_COLORS)}."
    )
    reverb_prob: float = Field(0.0, ge=0.0, le=1.0, description="Probability that a clip is reverberated.")
    reverb_rt60: tuple[float, float] = Field(
        (0.2, 0.8), description="Reverberation time range of the synthetic room, seconds (uniform per clip)."
    )
    gain_db: float = Field(
        0.0, ge=0.0, description="Random level change of +-gain_db dB (matters only without waveform normalisation)."
    )
    time_masks: int = Field(0, ge=0, description="Spans zeroed per clip (SpecAugment time masking); 0 = off.")
    time_mask_seconds: float = Field(0.1, gt=0.0, description="Longest zeroed span, seconds (each drawn uniformly).")
    vtlp: tuple[float, float] = Field(
        (1.0, 1.0), description="Vocal-tract-length perturbation (Jaitly & Hinton 2013): range of the factor, drawn "
        "uniformly per clip, by which the log-mel front-end stretches the frequency axis of a training clip, as if a "
        "speaker with a shorter (>1) or longer (<1) vocal tract had said it; tempo is kept (1.0 = off; 0.85..1.15 is "
        "the usual choice). Needs `model.backbone.frontend: logmel` or `logmel_pitch`.",
    )

    @field_validator("speed", "noise_snr_db", "reverb_rt60", "vtlp")
    @classmethod
    def _ordered(cls, value: tuple[float, float], info) -> tuple[float, float]:
        lo, hi = value
        if lo > hi:
            raise ValueError(f"{info.field_name}: the low end {lo} is above the high end {hi}")
        if info.field_name == "speed" and not (0.5 <= lo and hi <= 2.0):
            raise ValueError(f"speed factors must lie in 0.5..2.0, got {list(value)}")
        if info.field_name == "vtlp" and not (0.7 <= lo and hi <= 1.4):
            raise ValueError(f"vtlp factors must lie in 0.7..1.4, got {list(value)}")
        if info.field_name == "reverb_rt60" and lo <= 0:
            raise ValueError(f"reverb_rt60 must be positive, got {list(value)}")
        return value

    @field_validator("noise_colors")
    @classmethod
    def _colors(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in NOISE_COLORS]
        if unknown or not value:
            raise ValueError(f"noise_colors must be a non-empty subset of {list(NOISE_COLORS)}, got {value}")
        return value

    @property
    def active(self) -> bool:
        """Whether any waveform augmentation is switched on (``vtlp`` is the front-end's)."""
        return (
            (self.speed != (1.0, 1.0) and self.speed_prob > 0)
            or self.noise_prob > 0
            or self.reverb_prob > 0
            or self.gain_db > 0
            or self.time_masks > 0
        )


# ---- the pure functions ----------------------------------------------------------------


def speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """Play ``wave`` ``factor`` times faster (resampled with soxr): length / factor, pitch x factor."""
    import soxr

    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    if factor == 1.0 or wave.size == 0:
        return wave.astype(np.float32, copy=True)
    out = soxr.resample(np.ascontiguousarray(wave, dtype=np.float32), 16000 * factor, 16000, quality="MQ")
    return np.asarray(out, dtype=np.float32)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of unit-RMS noise with a white (flat), pink (1/f) or brown (1/f^2) spectrum."""
    if color not in NOISE_COLORS:
        raise ValueError(f"unknown noise color {color!r}; choose one of {list(NOISE_COLORS)}")
    white = rng.standard_normal(n)
    if color != "white" and n > 1:
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1]
        spectrum /= np.sqrt(f) if color == "pink" else f
        white = np.fft.irfft(spectrum, n)
    return (white / (np.sqrt(np.mean(white**2)) + 1e-12)).astype(np.float32)


def active_rms(wave: np.ndarray, frame: int = 400) -> float:
    """RMS over the louder half of 25 ms frames: the level of the speech, not of the pauses."""
    if wave.size == 0:
        return 0.0
    usable = wave[: wave.size // frame * frame].reshape(-1, frame) if wave.size >= frame else wave[None, :]
    power = np.mean(usable.astype(np.float64) ** 2, axis=1)
    top = np.sort(power)[len(power) // 2 :]
    return float(np.sqrt(np.mean(top)))


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator, color: str = "white") -> np.ndarray:
    """``wave`` plus noise ``snr_db`` dB below its active level (silence stays silent)."""
    level = active_rms(wave)
    if level == 0.0:
        return wave.astype(np.float32, copy=True)
    noise = colored_noise(wave.size, color, rng) * (level * 10 ** (-snr_db / 20))
    return (wave + noise).astype(np.float32)


def room_response(rt60: float, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """A synthetic room impulse response: the direct path, then noise decaying by 60 dB in ``rt60`` s."""
    n = max(2, int(min(rt60, 2.0) * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * 10 ** (-3 * t / rt60)  # -60 dB at t = rt60
    tail[: int(0.002 * sample_rate)] = 0.0  # first reflections after ~2 ms
    response = 0.3 * tail / (np.sqrt(np.sum(tail**2)) + 1e-12)
    response[0] = 1.0
    return response


def reverb(wave: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """``wave`` in a synthetic room (same length: the tail past the end is cut), level kept."""
    from scipy.signal import fftconvolve

    if wave.size == 0:
        return wave.astype(np.float32, copy=True)
    wet = fftconvolve(wave.astype(np.float64), room_response(rt60, rng))[: wave.size]
    scale = (np.sqrt(np.mean(wave.astype(np.float64) ** 2)) + 1e-12) / (np.sqrt(np.mean(wet**2)) + 1e-12)
    return (wet * scale).astype(np.float32)


def gain(wave: np.ndarray, db: float) -> np.ndarray:
    """``wave`` ``db`` dB louder (no clipping: training clips are floats)."""
    return (wave * 10 ** (db / 20)).astype(np.float32)


def time_mask(wave: np.ndarray, masks: int, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``wave`` with ``masks`` spans of up to ``max_samples`` zeroed (each at most a fifth of the clip)."""
    out = wave.astype(np.float32, copy=True)
    limit = min(max_samples, out.size // 5)
    for _ in range(masks):
        if limit < 1:
            break
        width = int(rng.integers(1, limit + 1))
        start = int(rng.integers(0, out.size - width + 1))
        out[start : start + width] = 0.0
    return out


# ---- chained per the config ------------------------------------------------------------


def augment_clip(wave: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """One training clip through the augmentations ``cfg`` switches on, in a fixed order:
    speed, reverb, noise, gain, time masks (a room and a microphone act before the level)."""
    out = np.asarray(wave, dtype=np.float32)
    if cfg.speed != (1.0, 1.0) and rng.random() < cfg.speed_prob:
        out = speed(out, float(rng.uniform(*cfg.speed)))
    if cfg.reverb_prob and rng.random() < cfg.reverb_prob:
        out = reverb(out, float(rng.uniform(*cfg.reverb_rt60)), rng)
    if cfg.noise_prob and rng.random() < cfg.noise_prob:
        color = cfg.noise_colors[int(rng.integers(len(cfg.noise_colors)))]
        out = add_noise(out, float(rng.uniform(*cfg.noise_snr_db)), rng, color)
    if cfg.gain_db:
        out = gain(out, float(rng.uniform(-cfg.gain_db, cfg.gain_db)))
    if cfg.time_masks:
        out = time_mask(out, cfg.time_masks, int(cfg.time_mask_seconds * sample_rate), rng)
    return out


def apply_vtlp(model: torch.nn.Module, cfg: AugmentConfig) -> None:
    """Set ``cfg.vtlp`` on the log-mel front-end of ``model`` (an ``EarlyExitModel``, possibly
    wrapped in DistributedDataParallel); it warps clips only while the model is in train()
    mode. A no-op when ``vtlp`` is off; a ValueError when it is on and the model has no
    log-mel front-end (the training config refuses that combination before this)."""
    if cfg.vtlp == (1.0, 1.0):
        return
    inner = getattr(model, "module", model)
    frontend = getattr(getattr(inner, "backbone", None), "feature_extractor", None)
    if not hasattr(frontend, "vtlp"):
        raise ValueError("augment.vtlp needs a log-mel front-end (model.backbone.frontend: logmel or logmel_pitch)")
    frontend.vtlp = tuple(cfg.vtlp)


def augment_batch(
    input_values: torch.Tensor, attention_mask: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch, every clip augmented on its valid samples, padded again.

    input_values: (batch, samples) float; attention_mask: (batch, samples), 1 = valid.
    Returns new tensors (the inputs are not modified); padding is zero, the mask marks the
    augmented lengths (speed perturbation changes them)."""
    lengths = attention_mask.sum(dim=1).tolist()
    values = input_values.detach().cpu().float().numpy()
    clips = [augment_clip(values[i, : int(n)], cfg, rng) for i, n in enumerate(lengths)]
    return pad_batch(clips)


__all__ = [
    "AugmentConfig",
    "NOISE_COLORS",
    "active_rms",
    "add_noise",
    "apply_vtlp",
    "augment_batch",
    "augment_clip",
    "colored_noise",
    "gain",
    "reverb",
    "room_response",
    "speed",
    "time_mask",
]
