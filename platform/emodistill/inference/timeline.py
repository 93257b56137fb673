"""The emotion timeline of one recording of any length, in bounded memory, without Ray.

    blocks (data.audio.stream)  ->  Segmenter (speech, windows)  ->  recognizer (batches)  ->  rows

    from emodistill import EmotionRecognizer
    recognizer = EmotionRecognizer.from_pretrained("runs/demo/checkpoint", exit="exit_3")
    timeline = recognizer.timeline("call.wav")                 # or s3://..., bytes
    for seg in timeline.segments: seg.start, seg.end, seg.label, seg.scores, seg.exit
    timeline.write_csv("call.csv"); timeline.plot("call.png")

Audio is decoded block by block (soundfile + soxr's streaming resampler) and dropped as
soon as no segment still to come needs it, so memory is a few windows of audio however
long the recording. :func:`iter_timeline` yields each segment as soon as it is classified
(what a Ray Data job consumes); :func:`iter_segments` yields the segments' audio
without a model (what a server that picks an exit per segment consumes). A recording with no speech has
no segments: an empty timeline, not an error.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from emodistill.data.audio import SAMPLE_RATE, AudioError, AudioLimits, local_audio_path, stream
from emodistill.inference.segments import SegmentOptions, Segmenter, merge_regions

# A recording, not a clip: hours are fine (memory stays flat); the limit bounds compute.
RECORDING_LIMITS = AudioLimits(min_seconds=0.0, max_seconds=24 * 3600.0)


@dataclass
class TimelineSegment:
    """One classified stretch of a recording."""

    start: float  # seconds from the start of the recording
    end: float
    label: str
    scores: dict[str, float]
    exit: str
    latency_ms: float  # model time of the batch this segment was in, per segment

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Timeline:
    """A recording's segments, its speech regions and what produced them."""

    source: str
    labels: list[str]
    exit: str
    duration: float = 0.0  # seconds of audio decoded
    segments: list[TimelineSegment] = field(default_factory=list)
    speech: list[tuple[float, float]] = field(default_factory=list)  # speech regions (s), merged
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "duration": self.duration, "exit": self.exit, "labels": self.labels,
            "options": self.options, "speech": [list(r) for r in self.speech],
            "segments": [s.to_dict() for s in self.segments],
        }

    def csv_text(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(csv_header(self.labels))
        for s in self.segments:
            writer.writerow(csv_row(s, self.labels))
        return buf.getvalue()

    def write_csv(self, path: str | os.PathLike) -> None:
        with open(path, "w", newline="") as fh:
            fh.write(self.csv_text())

    def write_json(self, path: str | os.PathLike) -> None:
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=1)

    def plot(self, path: str | os.PathLike, title: str | None = None) -> str:
        from emodistill.inference.timeline_plot import plot_timeline

        return plot_timeline(self, path, title)


def csv_header(labels: list[str]) -> list[str]:
    return ["start", "end", "label", "exit", "latency_ms", *[f"score_{label}" for label in labels]]


def csv_row(s: TimelineSegment, labels: list[str]) -> list:
    return [f"{s.start:.3f}", f"{s.end:.3f}", s.label, s.exit, s.latency_ms, *[s.scores[label] for label in labels]]


def iter_segments(
    audio,
    options: SegmentOptions = SegmentOptions(),
    limits: AudioLimits = RECORDING_LIMITS,
    block_seconds: float = 10.0,
    state: Timeline | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(start, end, wave)`` (samples at 16 kHz, the segment's audio) of each segment of a
    recording, as soon as it is final: no model here, so any classifier (a recognizer, a
    Serve router choosing an exit per segment) can consume it. ``audio``: a local path,
    ``s3://`` URI, file bytes or a binary file object. ``state`` (optional) gets the
    duration and, at the end, the speech regions. Raises
    :class:`~emodistill.data.audio.AudioError` for input that is not audio (after the
    segments before the fault, in a stream)."""
    segmenter = Segmenter(options)
    buf = np.zeros(0, dtype=np.float32)  # audio from sample `buf_start` on
    buf_start = 0
    total = 0
    with _open(audio) as source:
        for block in stream(source, limits, SAMPLE_RATE, block_seconds):
            buf = np.concatenate([buf, block]) if buf.size else block
            total += block.size
            for s, e in segmenter.feed(block):
                yield s, e, buf[s - buf_start: e - buf_start].copy()
            keep = segmenter.keep_from()
            if keep > buf_start:  # drop what no segment to come needs
                buf = buf[keep - buf_start:].copy()
                buf_start = keep
            if state is not None:
                state.duration = round(total / SAMPLE_RATE, 3)
        for s, e in segmenter.finish(total):
            yield s, e, buf[s - buf_start: e - buf_start].copy()
    if state is not None:
        state.duration = round(total / SAMPLE_RATE, 3)
        state.speech = [(round(s / SAMPLE_RATE, 3), round(e / SAMPLE_RATE, 3)) for s, e in merge_regions(segmenter.regions)]


def iter_timeline(
    recognizer,
    audio,
    options: SegmentOptions = SegmentOptions(),
    limits: AudioLimits = RECORDING_LIMITS,
    batch_size: int = 8,
    block_seconds: float = 10.0,
    state: Timeline | None = None,
) -> Iterator[TimelineSegment]:
    """Classify a recording segment by segment (:func:`iter_segments`, ``batch_size`` per
    model call), yielding each as soon as its batch is done."""
    batch: list[tuple[int, int, np.ndarray]] = []

    def run() -> list[TimelineSegment]:
        preds = recognizer.predict_waves([w for _, _, w in batch])
        per = round(preds[0].latency_ms / len(preds), 3) if preds else 0.0
        return [TimelineSegment(round(s / SAMPLE_RATE, 3), round(e / SAMPLE_RATE, 3), p.label, p.scores, p.exit, per)
                for (s, e, _), p in zip(batch, preds)]

    for item in iter_segments(audio, options, limits, block_seconds, state):
        batch.append(item)
        if len(batch) >= batch_size:
            yield from run()
            batch = []
    if batch:
        yield from run()


def timeline(recognizer, audio, options: SegmentOptions = SegmentOptions(), limits: AudioLimits = RECORDING_LIMITS,
             batch_size: int = 8, block_seconds: float = 10.0) -> Timeline:
    """The whole :class:`Timeline` of a recording (see :func:`iter_timeline`)."""
    out = Timeline(source=_name(audio), labels=list(recognizer.labels), exit=recognizer.exit,
                   options={k: v for k, v in asdict(options).items()})
    out.segments = list(iter_timeline(recognizer, audio, options, limits, batch_size, block_seconds, state=out))
    return out


class _open:
    """A path or URI opened as a binary file (s3 through fsspec), or bytes as they are."""

    def __init__(self, audio):
        self.audio = audio
        self.fh = None

    def __enter__(self):
        audio = self.audio
        if isinstance(audio, (bytes, bytearray, memoryview)):
            if not len(audio):
                raise AudioError("empty", "the audio is empty (0 bytes)")
            return bytes(audio)
        if hasattr(audio, "read"):
            return audio
        uri = str(audio)
        if "://" in uri and not uri.startswith("file://"):
            from emodistill.storage import get_fs

            fs, path = get_fs(uri)
            try:
                self.fh = fs.open(path, "rb")
            except FileNotFoundError as err:
                raise AudioError("not_found", f"no such file: {uri}") from err
            return self.fh
        return local_audio_path(uri)

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()
        return False


def _name(audio) -> str:
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(getattr(audio, "name", audio))


__all__ = ["RECORDING_LIMITS", "Timeline", "TimelineSegment", "csv_header", "csv_row", "iter_segments", "iter_timeline", "timeline"]
