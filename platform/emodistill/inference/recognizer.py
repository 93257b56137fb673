"""``EmotionRecognizer``: a trained model in one call, without Ray.

    from emodistill import EmotionRecognizer

    recognizer = EmotionRecognizer.from_pretrained("runs/demo/checkpoint", exit="exit_3")
    recognizer = EmotionRecognizer.from_pretrained("s3://bucket/ckpt", budget_ms=50)  # deepest exit within 50 ms here
    recognizer = EmotionRecognizer.from_pretrained("exports/exit_3-int8")                 # an `emodistill export` directory
    result = recognizer.predict("clip.wav")            # or bytes, or an array with sample_rate=
    result.label, result.scores, result.exit, result.latency_ms

Audio goes through the decode and checks of training and serving (``emodistill.data.audio``):
any soundfile format, rate and channel count; silent, corrupt, empty, too short or too
long audio raises :class:`~emodistill.data.audio.AudioError` with a ``reason``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from emodistill.data.audio import SAMPLE_RATE, AudioError, AudioLimits, check, decode, local_audio_path
from emodistill.inference.loading import Opened, open_runtime
from emodistill.inference.runtime import Precision, timed_logits
from emodistill.inference.timing import ExitLatencies, choose_exit, exit_latencies


@dataclass
class EmotionPrediction:
    """One clip's answer."""

    label: str  # the most likely label
    scores: dict[str, float]  # softmax over the labels, in the model's label order
    exit: str  # the exit that answered (exit_<block>)
    latency_ms: float  # model time of this clip (decoding not included)
    seconds: float  # duration of the clip at 16 kHz

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExitSelection:
    """Why this exit: the budget and each exit's latency on this device."""

    budget_ms: float
    exit: str
    latencies: ExitLatencies


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def as_mono(audio: np.ndarray) -> np.ndarray:
    """(samples,), (samples, channels) as soundfile gives, or (channels, samples) as
    torchaudio gives (channels <= 8 < samples) -> mono float32; integer PCM scaled to [-1, 1]."""
    wave = np.asarray(audio)
    if np.issubdtype(wave.dtype, np.integer):
        wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max + 1)
    wave = wave.astype(np.float32, copy=False)
    if wave.ndim == 2:
        channels_first = wave.shape[0] <= 8 < wave.shape[1]
        wave = wave.mean(axis=0 if channels_first else 1, dtype=np.float32)
    if wave.ndim != 1:
        raise AudioError("unreadable", f"audio arrays are (samples,) or (samples, channels), got shape {np.shape(audio)}")
    return np.ascontiguousarray(wave)


class EmotionRecognizer:
    """One exit of a trained model: audio in, label and scores out."""

    def __init__(self, opened: Opened, limits: AudioLimits = AudioLimits(), selection: ExitSelection | None = None):
        self.opened = opened
        self.runtime = opened.runtime
        self.limits = limits
        self.selection = selection

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        exit: str | None = None,
        budget_ms: float | None = None,
        device: str = "cpu",
        precision: Precision | None = None,
        threads: int | None = None,
        budget_seconds: float = 3.0,
        limits: AudioLimits | None = None,
        warmup: bool = True,
    ) -> EmotionRecognizer:
        """Load from a checkpoint or an exported directory (local or ``s3://``).

        ``exit``: the exit to answer from (default: the deepest). ``budget_ms``: instead,
        the deepest exit whose p95 latency on ``device`` for a ``budget_seconds`` clip is
        within budget (from the checkpoint's exit_profile.json when it was measured on this
        device, else measured now). ``precision``: fp32 or bf16 (torch); an export runs in
        the precision it was exported in. ``threads``: CPU threads (torch and onnxruntime).
        """
        source = str(source)
        if exit is not None and budget_ms is not None:
            raise ValueError("give exit or budget_ms, not both")
        selection = None
        if budget_ms is not None:
            from emodistill.checkpoint import read_checkpoint_config
            from emodistill.inference.package import kind_of

            if kind_of(source) != "checkpoint":
                raise ValueError(f"{source} is an export of one exit; budget_ms chooses among a checkpoint's exits")
            if threads:
                import torch

                torch.set_num_threads(threads)
            config = read_checkpoint_config(source)
            latencies = exit_latencies(source, config, device, precision or "fp32", budget_seconds)
            where = f" on {latencies.device.kind} {latencies.device.name!r} ({latencies.source}, p95, {budget_seconds:g} s clip)"
            exit = choose_exit(latencies.latency_ms, budget_ms, where).exit
            selection = ExitSelection(budget_ms, exit, latencies)
        opened = open_runtime(source, exit, device=device, precision=precision, threads=threads)
        recognizer = cls(opened, limits or AudioLimits(), selection)
        if warmup:
            opened.runtime.warmup(seconds=(1.0,), repeats=1)
        return recognizer

    # ---- what it is --------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.runtime.labels)

    @property
    def exit(self) -> str:
        return self.runtime.exit

    @property
    def device(self) -> str:
        return self.runtime.device

    def describe(self) -> dict[str, Any]:
        out = self.opened.describe()
        if self.selection is not None:
            out["selection"] = {
                "budget_ms": self.selection.budget_ms,
                "latency_ms": self.selection.latencies.latency_ms,
                "source": self.selection.latencies.source,
            }
        return out

    def __repr__(self) -> str:
        return f"EmotionRecognizer({self.opened.uri!r}, exit={self.exit!r}, runtime={self.runtime.name!r}, device={self.device!r})"

    # ---- audio -------------------------------------------------------------------------
    def load_audio(self, audio: Any, sample_rate: int | None = None) -> np.ndarray:
        """A path, ``s3://`` URI, file bytes or an array (``sample_rate``: its rate; None =
        16 kHz) -> checked mono float32 at 16 kHz. Raises AudioError with a reason."""
        limits = self.limits
        if isinstance(audio, (bytes, bytearray, memoryview)):
            if not len(audio):
                raise AudioError("empty", "the audio is empty (0 bytes)")
            wave = decode(bytes(audio), limits)
        elif isinstance(audio, (str, os.PathLike)):
            wave = decode_file(str(audio), limits)
        else:
            if hasattr(audio, "detach"):  # a torch tensor
                audio = audio.detach().cpu().numpy()
            wave = as_mono(audio)
            rate = int(sample_rate or SAMPLE_RATE)
            if wave.size > limits.max_seconds * rate:  # before resampling it
                raise AudioError("too_long", f"audio is {wave.size / rate:.1f} s, over the {limits.max_seconds:g} s limit")
            if rate != SAMPLE_RATE and wave.size:
                import soxr

                wave = soxr.resample(wave, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
        check(wave, limits)
        return wave

    # ---- predicting ----------------------------------------------------------------------
    def predict(self, audio: Any, sample_rate: int | None = None) -> EmotionPrediction:
        """The emotion of one clip (path, ``s3://`` URI, bytes, or array with ``sample_rate``)."""
        return self.predict_waves([self.load_audio(audio, sample_rate)])[0]

    def predict_batch(self, audios: Sequence[Any], sample_rate: int | None = None) -> list[EmotionPrediction]:
        """Several clips in one model call (each still gets its own answer)."""
        return self.predict_waves([self.load_audio(a, sample_rate) for a in audios])

    def predict_waves(self, waves: Sequence[np.ndarray]) -> list[EmotionPrediction]:
        """Decoded, checked clips (mono float32, 16 kHz) in one call."""
        logits, ms = timed_logits(self.runtime, waves)
        probs = softmax(logits.astype(np.float64))
        labels = self.labels
        out = []
        for wave, p in zip(waves, probs):
            scores = {label: round(float(v), 6) for label, v in zip(labels, p)}
            out.append(EmotionPrediction(labels[int(p.argmax())], scores, self.exit, round(ms, 3), round(wave.size / SAMPLE_RATE, 3)))
        return out


    # ---- recordings --------------------------------------------------------------------
    def timeline(self, audio: Any, segment: str = "vad", vad: str = "silero", window: float = 3.0, hop: float = 1.5,
                 batch_size: int = 8, max_seconds: float | None = None, **options: Any):
        """The emotion timeline of a recording of any length (path, ``s3://`` URI, bytes or a
        binary file): speech found by ``vad`` (silero or energy; ``segment="fixed"``: windows
        over everything), long speech cut into ``window``-second windows every ``hop`` s, each
        classified by this exit. Memory stays a few windows of audio. Returns a
        :class:`~emodistill.inference.timeline.Timeline` (``.segments``, ``.write_csv``,
        ``.plot``); no speech gives no segments. More options: :class:`SegmentOptions`."""
        from emodistill.inference.segments import SegmentOptions
        from emodistill.inference.timeline import RECORDING_LIMITS, timeline

        limits = RECORDING_LIMITS if max_seconds is None else AudioLimits(min_seconds=0.0, max_seconds=max_seconds)
        opts = SegmentOptions(segment=segment, vad=vad, window=window, hop=hop, **options)
        return timeline(self, audio, opts, limits, batch_size=batch_size)


def decode_file(uri: str, limits: AudioLimits) -> np.ndarray:
    """A local path or a remote URI -> mono float32 at 16 kHz (AudioError on anything else)."""
    if "://" in uri and not uri.startswith("file://"):
        from emodistill.storage import get_fs

        fs, path = get_fs(uri)
        try:
            with fs.open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError as err:
            raise AudioError("not_found", f"no such file: {uri}") from err
        if not data:
            raise AudioError("empty", "the file is empty (0 bytes)")
        return decode(data, limits)
    path = local_audio_path(uri)
    try:
        return decode(path, limits)
    except PermissionError as err:
        raise AudioError("unreadable", f"cannot read {uri}: permission denied") from err


__all__ = ["EmotionPrediction", "EmotionRecognizer", "ExitSelection", "as_mono", "decode_file", "softmax"]
