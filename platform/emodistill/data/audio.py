"""Decode, check and encode audio: the one path for ingest, training and serving.

soundfile (libsndfile) decodes wav, flac, ogg/vorbis/opus and mp3 where the library has
it; channels are averaged to mono; soxr resamples to the target rate (16 kHz). Audio is
stored as 16-bit FLAC, so every sample the model ever sees lies in [-1, 1].

A file's header can lie (a FLAC declaring 655,350 Hz and 8 channels, a length of
"unknown", a WAV at 1 Hz that resamples to 30 s), so decoding is bounded before and
during the work::

    header  -> sample rate, channels, declared length, decoded bytes   (AudioLimits)
    blocks  -> read <= 64k frames at a time; stop as soon as the stream
               passes max_seconds or max_decoded_bytes, whatever the
               header said; reject non-finite samples, clip to [-1, 1],
               average channels (memory: the mono clip, never frames x channels)
    resample-> soxr to 16 kHz, clip again (the resampler rings past full scale)

:func:`stream` decodes a recording of any length the same way, yielding 16 kHz blocks
(soxr's streaming resampler) so memory is one block whatever the file's length.

Every failure is an :class:`AudioError` with a machine-readable ``reason``: the reject
reason of ingest and the error code of the HTTP API.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
_BLOCK_BYTES = 1 << 20  # one read of interleaved float32 samples (a block of frames x channels)


class AudioError(ValueError):
    """Audio that cannot be used, with a short machine-readable ``reason``.

    Reasons: ``unreadable``, ``empty``, ``non_finite``, ``silent``, ``too_short``,
    ``too_long``, ``sample_rate`` (outside the accepted range), ``channels`` (more than
    accepted), ``too_large`` (decodes to more samples than accepted).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AudioLimits:
    """What counts as usable audio, checked from the header before decoding and again
    on the decoded stream (headers lie)."""

    min_seconds: float = 0.25
    max_seconds: float = 30.0  # of the input: decoding stops once the stream passes it
    silence_peak: float = 1e-4  # full scale is 1.0; below this everywhere = silent
    min_sample_rate: int = 8000  # telephone speech; below it a few bytes resample to seconds
    max_sample_rate: int = 192000  # studio audio; above it is a lying header, not a recording
    max_channels: int = 8  # 7.1 audio; mono is what the model takes
    max_decoded_bytes: int = 64 * 1024 * 1024  # frames x channels x 4 (float32): 30 s of 192 kHz stereo fits


@dataclass(frozen=True)
class AudioHeader:
    """What a file says about itself before a sample is decoded."""

    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int | None  # None: the header does not say (a FLAC may declare 0 = unknown)

    @property
    def seconds(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


def local_audio_path(uri: str) -> str:
    """A local path or ``file://`` URI, checked before it is opened: AudioError ``not_found``,
    ``unreadable`` (a directory) or ``empty``."""
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    if not os.path.exists(path):
        raise AudioError("not_found", f"no such file: {uri}")
    if os.path.isdir(path):
        raise AudioError("unreadable", f"{uri} is a directory")
    if os.path.getsize(path) == 0:
        raise AudioError("empty", "the file is empty (0 bytes)")
    return path


def check_header(header: AudioHeader, limits: AudioLimits = AudioLimits()) -> None:
    """Raise :class:`AudioError` for a header whose audio would be over ``limits``."""
    rate, channels = header.sample_rate, header.channels
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise AudioError(
            "sample_rate",
            f"sample rate {rate} Hz is outside the accepted {limits.min_sample_rate}-{limits.max_sample_rate} Hz",
        )
    if not 1 <= channels <= limits.max_channels:
        raise AudioError("channels", f"audio has {channels} channels; at most {limits.max_channels} are accepted")
    if header.frames is None:
        return
    if header.frames > limits.max_seconds * rate:
        raise AudioError("too_long", f"audio is {header.seconds:.1f} s, over the {limits.max_seconds:g} s limit")
    if header.frames * channels * 4 > limits.max_decoded_bytes:
        raise AudioError("too_large", _too_large(header.frames * channels * 4, limits))


def read_header(data: bytes | str) -> AudioHeader:
    """The header of ``data`` (file bytes or a local path), without decoding samples."""
    try:
        with sf.SoundFile(_source(data)) as fh:
            return _header(fh)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError("unreadable", f"not a readable audio file ({_short(err)})") from err


def decode(data: bytes | str, limits: AudioLimits = AudioLimits(), sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode ``data`` (file bytes or a local path) to mono float32 in [-1, 1] at ``sample_rate``.

    The header is checked against ``limits`` first, then the stream is decoded in blocks
    and abandoned as soon as it passes ``max_seconds`` or ``max_decoded_bytes``, so no
    header can make decoding allocate or compute beyond them. Raises :class:`AudioError`
    for anything that is not usable audio (non-finite samples included).
    """
    try:
        with sf.SoundFile(_source(data)) as fh:
            header = _header(fh)
            check_header(header, limits)
            mono = _read_mono(fh, header, limits)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError("unreadable", f"not a readable audio file ({_short(err)})") from err
    if mono.size == 0:
        raise AudioError("empty", "audio has no samples")
    if header.sample_rate != sample_rate:
        mono = soxr.resample(mono, header.sample_rate, sample_rate, quality="HQ")
        mono = np.clip(mono, -1.0, 1.0, out=np.ascontiguousarray(mono, dtype=np.float32))
    return np.ascontiguousarray(mono, dtype=np.float32)


def decode_clip(data: bytes, limits: AudioLimits = AudioLimits(), sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """File bytes -> a clip the model can take (:func:`decode`, then :func:`check`), or an
    :class:`AudioError` saying why not. Serving and ingest both call this."""
    if not data:
        raise AudioError("empty", "no audio: the file or request body is empty")
    wave = decode(data, limits, sample_rate)
    check(wave, limits, sample_rate)
    return wave


def stream(
    source,
    limits: AudioLimits = AudioLimits(),
    sample_rate: int = SAMPLE_RATE,
    block_seconds: float = 10.0,
):
    """Decode a recording of any length block by block: yields mono float32 arrays in
    [-1, 1] at ``sample_rate`` (about ``block_seconds`` each), never the whole file.

    ``source``: a local path, file bytes or a binary file object (an fsspec/s3 file). The
    header is checked against ``limits`` (rate, channels, declared length vs
    ``max_seconds``; not ``max_decoded_bytes``, which bounds a whole-clip decode: here
    memory is one block), then the stream is capped at ``max_seconds`` whatever the header
    said. soxr's ``ResampleStream`` resamples across block boundaries (the same samples as
    one call over the whole file, up to its filter delay). Raises :class:`AudioError`.
    """
    try:
        with sf.SoundFile(_source(source)) as fh:
            header = _header(fh)
            check_header(header, AudioLimits(**{**limits.__dict__, "max_decoded_bytes": 2**62}))
            rate = header.sample_rate
            block = max(1024, int(block_seconds * rate))
            resampler = None if rate == sample_rate else soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
            any_samples = False
            for mono in _mono_blocks(fh, header, limits, int(limits.max_seconds * rate), block=block):
                any_samples = True
                if resampler is not None:
                    mono = np.clip(resampler.resample_chunk(mono), -1.0, 1.0)
                if mono.size:
                    yield np.ascontiguousarray(mono, dtype=np.float32)
            if resampler is not None and any_samples:
                tail = np.clip(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True), -1.0, 1.0)
                if tail.size:
                    yield np.ascontiguousarray(tail, dtype=np.float32)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError("unreadable", f"not a readable audio file ({_short(err)})") from err
    if not any_samples:
        raise AudioError("empty", "audio has no samples")


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
    if limits.silence_peak > 0 and float(np.abs(wave).max()) < limits.silence_peak:
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


# ---- internals --------------------------------------------------------------------------


def _source(data: bytes | str):
    return io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data


def _header(fh: sf.SoundFile) -> AudioHeader:
    # libsndfile reports an undeclared length (FLAC total_samples = 0) as SF_COUNT_MAX
    frames = fh.frames if 0 <= fh.frames < 2**62 else None
    return AudioHeader(fh.format, fh.subtype, int(fh.samplerate), int(fh.channels), frames)


def _read_mono(fh: sf.SoundFile, header: AudioHeader, limits: AudioLimits) -> np.ndarray:
    """The whole stream as mono float32 at the file's rate, in bounded blocks."""
    max_frames = min(int(limits.max_seconds * header.sample_rate), limits.max_decoded_bytes // (4 * header.channels))
    pieces = list(_mono_blocks(fh, header, limits, max_frames))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def _mono_blocks(fh: sf.SoundFile, header: AudioHeader, limits: AudioLimits, max_frames: int, block: int | None = None):
    """Mono float32 blocks at the file's rate (each a fresh array), clipped to [-1, 1];
    :class:`AudioError` as soon as the stream passes ``max_frames`` or turns non-finite.

    libsndfile's ``sf_readf_float`` is called directly: soundfile's ``read`` seeks after
    every block and asks for "all remaining frames", both of which fail or explode on a
    stream whose length is undeclared.
    """
    channels, rate = header.channels, header.sample_rate
    block = block or max(1024, _BLOCK_BYTES // (4 * channels))
    buf = np.empty((block, channels), dtype=np.float32)
    ptr = sf._ffi.cast("float *", buf.ctypes.data)
    total = 0
    while True:
        n = int(sf._snd.sf_readf_float(fh._file, ptr, block))
        err = sf._snd.sf_error(fh._file)
        if err:
            raise AudioError("unreadable", f"the audio stream is corrupt ({sf._ffi.string(sf._snd.sf_error_number(err)).decode()})")
        if n <= 0:
            return
        total += n
        if total > max_frames:  # the header said less, or nothing: stop here, whatever follows
            if total > limits.max_seconds * rate:
                raise AudioError("too_long", f"audio is over the {limits.max_seconds:g} s limit")
            raise AudioError("too_large", _too_large(total * channels * 4, limits, at_least=True))
        view = buf[:n]
        if not np.isfinite(view).all():
            raise AudioError("non_finite", "audio contains NaN or infinite samples")
        np.clip(view, -1.0, 1.0, out=view)  # like training, which stores 16-bit audio
        yield view.mean(axis=1, dtype=np.float32) if channels > 1 else view[:, 0].copy()


def _too_large(nbytes: int, limits: AudioLimits, at_least: bool = False) -> str:
    size = f"{'over ' if at_least else ''}{nbytes / 2**20:.1f} MiB"
    return (
        f"audio decodes to {size} of samples (frames x channels x 4 bytes), over the "
        f"{limits.max_decoded_bytes / 2**20:.0f} MiB limit; send fewer channels, a lower rate or a shorter clip"
    )


def _short(err: Exception) -> str:
    """First line of a decoder error, without libsndfile's "Error opening <object at 0x..>:"
    prefix (it names a memory address: noise to a reader, and different on every run)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^Error opening .*?: ", "", text)
    return text[:200]
