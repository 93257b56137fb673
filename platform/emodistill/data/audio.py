"""Decode, check and encode audio: the one path for ingest, training and serving.

soundfile (libsndfile) decodes wav, flac, ogg/vorbis/opus and mp3 where the library has
it; channels are averaged to mono; soxr resamples to the target rate (16 kHz). Audio is
stored as 16-bit FLAC.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """Audio that cannot be used, with a short machine-readable ``reason``.

    Reasons: ``unreadable``, ``empty``, ``non_finite``, ``silent``, ``too_short``,
    ``too_long``.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AudioLimits:
    """What counts as usable audio."""

    min_seconds: float = 0.25
    max_seconds: float = 30.0
    silence_peak: float = 1e-4  # full scale is 1.0; below this everywhere = silent


def decode(data: bytes | str, sample_rate: int = SAMPLE_RATE, max_input_seconds: float | None = None) -> np.ndarray:
    """Decode ``data`` (file bytes or a local path) to mono float32 at ``sample_rate``.

    ``max_input_seconds`` refuses longer inputs before decoding them in full (a cheap
    guard for servers). Raises :class:`AudioError` for anything that is not audio.
    """
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with sf.SoundFile(source) as fh:
            rate, frames = fh.samplerate, fh.frames
            if max_input_seconds is not None and frames > max_input_seconds * rate:
                raise AudioError("too_long", f"audio is {frames / rate:.1f} s, over the {max_input_seconds:g} s limit")
            wave = fh.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError("unreadable", f"not a readable audio file ({_short(err)})") from err
    if wave.shape[0] == 0:
        raise AudioError("empty", "audio has no samples")
    mono = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono, dtype=np.float32)


def check(wave: np.ndarray, limits: AudioLimits = AudioLimits(), sample_rate: int = SAMPLE_RATE) -> None:
    """Raise :class:`AudioError` unless ``wave`` (mono float) is usable under ``limits``."""
    if wave.size == 0:
        raise AudioError("empty", "audio has no samples")
    if not np.isfinite(wave).all():
        raise AudioError("non_finite", "audio contains NaN or infinite samples")
    seconds = wave.size / sample_rate
    if seconds < limits.min_seconds:
        raise AudioError("too_short", f"audio is {seconds:.3f} s, under the {limits.min_seconds:g} s minimum")
    if seconds > limits.max_seconds:
        raise AudioError("too_long", f"audio is {seconds:.1f} s, over the {limits.max_seconds:g} s maximum")
    if float(np.abs(wave).max()) < limits.silence_peak:
        raise AudioError("silent", "audio is silent (peak below the silence threshold)")


def encode_flac(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit FLAC bytes of mono float ``wave`` (clipped to [-1, 1]); deterministic."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_flac(data: bytes) -> np.ndarray:
    """Stored FLAC bytes -> float32 mono at the stored rate (what the reader needs)."""
    wave, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return wave if wave.ndim == 1 else wave.mean(axis=1, dtype=np.float32)


def _short(err: Exception) -> str:
    """First line of a decoder error, without libsndfile's "Error opening <object at 0x..>:"
    prefix (it names a memory address: noise to a reader, and different on every run)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^Error opening .*?: ", "", text)
    return text[:200]
