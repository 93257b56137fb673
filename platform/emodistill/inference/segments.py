"""Where the speech is in a stream of 16 kHz audio, found online in bounded memory.

    detector (frame scores)  ->  Segmenter (hysteresis, windows)  ->  (start, end) segments

A detector scores each 32 ms frame (512 samples) for speech in [0, 1]:

    SileroDetector   silero-vad's model as shipped in the ``silero-vad`` package (its
                     TorchScript file; offline, no torchaudio), stateful across blocks
    EnergyDetector   frame level in dBFS against an absolute floor and a tracked noise
                     floor: no dependency, robust enough for clean calls

The :class:`Segmenter` turns frame scores into speech regions the way silero's
``get_speech_timestamps`` does (start above ``threshold``, end after ``min_silence_ms``
below ``threshold - 0.15``, drop regions under ``min_speech_ms``, pad each side), but
online, and cuts long speech into ``window``-second windows every ``hop`` seconds (the
last one aligned to the region's end). ``fixed`` segmentation windows the whole recording
instead and skips windows quieter than ``energy_floor_db`` throughout. No audio is kept here: the caller holds the
samples and cuts the segments it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SAMPLE_RATE = 16000
FRAME = 512  # samples per detector frame at 16 kHz (32 ms): silero's window

Detector = Literal["silero", "energy"]
Segmentation = Literal["vad", "fixed"]


@dataclass(frozen=True)
class SegmentOptions:
    """How a recording is cut into the segments that get classified."""

    segment: Segmentation = "vad"  # vad: speech regions, windowed; fixed: windows over everything
    vad: Detector = "silero"
    window: float = 3.0  # seconds: longer speech is cut into windows of this length
    hop: float = 1.5  # seconds between window starts (window - hop = overlap)
    threshold: float = 0.5  # frame speech score that starts a region
    min_speech_ms: float = 250.0  # shorter regions are dropped
    min_silence_ms: float = 300.0  # a pause this long ends a region
    pad_ms: float = 30.0  # added on each side of a region
    energy_floor_db: float = -45.0  # frames quieter than this (dBFS) are never speech; fixed: windows this quiet are skipped

    def __post_init__(self) -> None:
        if self.segment not in ("vad", "fixed"):
            raise ValueError(f"segment is vad or fixed, not {self.segment!r}")
        if self.vad not in ("silero", "energy"):
            raise ValueError(f"vad is silero or energy, not {self.vad!r}")
        if not 0 < self.hop <= self.window:
            raise ValueError(f"need 0 < hop <= window, got hop {self.hop:g} s, window {self.window:g} s")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold is in (0, 1), got {self.threshold:g}")


# ---- detectors --------------------------------------------------------------------------


class SileroDetector:
    """silero-vad's shipped model, one 512-sample frame at a time, its state kept across calls."""

    def __init__(self):
        import torch
        from silero_vad import load_silero_vad

        self._torch = torch
        self.model = load_silero_vad()
        self.model.reset_states()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        torch = self._torch
        out = np.empty(len(frames), dtype=np.float32)
        with torch.inference_mode():
            for i, frame in enumerate(frames):
                out[i] = float(self.model(torch.from_numpy(frame), SAMPLE_RATE))
        return out


class EnergyDetector:
    """Speech score from frame level: 1 where a frame is above the absolute floor and
    12 dB over a slowly tracked noise floor, else 0 (no dependency)."""

    def __init__(self, floor_db: float = -45.0, margin_db: float = 12.0):
        self.floor_db = floor_db
        self.margin_db = margin_db
        self.noise_db: float | None = None

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
        db = 20 * np.log10(rms)
        out = np.zeros(len(frames), dtype=np.float32)
        for i, level in enumerate(db):
            if self.noise_db is None:
                self.noise_db = min(level, self.floor_db)
            # the floor falls at once and rises slowly (about 3 dB a second), so speech does not lift it
            self.noise_db = level if level < self.noise_db else self.noise_db + 0.1
            out[i] = 1.0 if level > self.floor_db and level > min(self.noise_db, -20.0) + self.margin_db else 0.0
        return out


def make_detector(options: SegmentOptions):
    return SileroDetector() if options.vad == "silero" else EnergyDetector(options.energy_floor_db)


# ---- segmenting ---------------------------------------------------------------------------


class Segmenter:
    """Feed it 16 kHz blocks; it returns the (start, end) sample ranges to classify as soon
    as they are final, and the speech regions found. Memory: a few frames."""

    def __init__(self, options: SegmentOptions, detector=None):
        self.o = options
        self.detector = detector if detector is not None else (make_detector(options) if options.segment == "vad" else None)
        self.window = int(round(options.window * SAMPLE_RATE))
        self.hop = int(round(options.hop * SAMPLE_RATE))
        self.pad = int(options.pad_ms * SAMPLE_RATE / 1000)
        self.min_speech = int(options.min_speech_ms * SAMPLE_RATE / 1000)
        self.min_silence = int(options.min_silence_ms * SAMPLE_RATE / 1000)
        self.pending = np.zeros(0, dtype=np.float32)  # samples not yet scored (< one frame)
        self.pos = 0  # samples scored so far
        self.regions: list[tuple[int, int]] = []  # speech regions, padded (vad)
        # the open region
        self.start: int | None = None
        self.temp_end: int | None = None
        self.next_window: int | None = None  # start of the next window to emit in the open region
        self.emitted_end: int | None = None  # end of the last window emitted in the open region
        # fixed
        self.peaks: list[tuple[int, float]] = []  # fixed: (frame start, level dBFS) of recent frames

    # -- public ---------------------------------------------------------------------------
    def feed(self, block: np.ndarray) -> list[tuple[int, int]]:
        """Score ``block`` (after the samples fed before); return segments now final."""
        data = np.concatenate([self.pending, block]) if self.pending.size else block
        n = (data.size // FRAME) * FRAME
        self.pending = data[n:].copy()
        if n == 0:
            return []
        frames = data[:n].reshape(-1, FRAME)
        if self.o.segment == "fixed":
            return self._fixed(frames)
        scores = self.detector(frames)
        out: list[tuple[int, int]] = []
        for score in scores:
            self._step(float(score), out)
            self.pos += FRAME
        return out

    def finish(self, total: int) -> list[tuple[int, int]]:
        """The recording ended after ``total`` samples: close what is open."""
        out: list[tuple[int, int]] = []
        if self.o.segment == "fixed":
            if self.pending.size:
                self.peaks.append((self.pos, float(10 * np.log10(np.mean(self.pending.astype(np.float64) ** 2) + 1e-12))))
                self.pos += self.pending.size
                self.pending = np.zeros(0, dtype=np.float32)
            self._fixed_emit(total, out, final=True)
            return out
        if self.start is not None:  # speech up to the end, or a pause at the end shorter than min_silence
            self._close(self.temp_end if self.temp_end is not None else total, total, out)
        return out

    def keep_from(self) -> int:
        """The earliest sample a segment still to come can start at (the caller may drop
        audio before it)."""
        if self.o.segment == "fixed":
            return max(0, (self.next_window or 0) - self.window)
        if self.start is not None:  # the next window, or a last one aligned to an end still to come
            return max(0, min(self.next_window, self.pos - self.min_silence - self.window - FRAME) - self.pad)
        return max(0, self.pos - self.pad - FRAME)

    # -- vad ------------------------------------------------------------------------------
    def _step(self, score: float, out: list) -> None:
        o = self.o
        pos = self.pos
        if score >= o.threshold:
            self.temp_end = None
            if self.start is None:
                self.start = pos
                self.next_window = max(0, pos - self.pad)
                self.emitted_end = None
        elif self.start is not None and score < o.threshold - 0.15:
            if self.temp_end is None:
                self.temp_end = pos
            if pos + FRAME - self.temp_end >= self.min_silence:
                self._close(self.temp_end, pos + FRAME, out)
                return
        if self.start is not None:
            self._emit_windows(pos + FRAME, out)

    def _emit_windows(self, upto: int, out: list) -> None:
        """Windows of the open region that lie wholly before ``upto``."""
        while self.next_window + self.window <= upto:
            out.append((self.next_window, self.next_window + self.window))
            self.emitted_end = self.next_window + self.window
            self.next_window += self.hop

    def _close(self, end: int, total_or_pos: int, out: list) -> None:
        start = max(0, self.start - self.pad)
        end = min(end + self.pad, max(total_or_pos, end))
        if end - self.start >= self.min_speech or self.emitted_end is not None:
            self.regions.append((start, end))
            if self.emitted_end is None:
                out.append((start, end))
            elif self.emitted_end < end:
                out.append((max(start, end - self.window), end))
        self.start = self.temp_end = self.next_window = self.emitted_end = None

    # -- fixed ----------------------------------------------------------------------------
    def _fixed(self, frames: np.ndarray) -> list[tuple[int, int]]:
        if self.next_window is None:
            self.next_window = 0
        levels = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)  # dBFS
        for i, p in enumerate(levels):
            self.peaks.append((self.pos + i * FRAME, float(p)))
        self.pos += len(frames) * FRAME
        out: list[tuple[int, int]] = []
        self._fixed_emit(self.pos, out, final=False)
        return out

    def _fixed_emit(self, upto: int, out: list, final: bool) -> None:
        if self.next_window is None:
            self.next_window = 0
        while self.next_window + self.window <= upto:
            self._fixed_window(self.next_window, self.next_window + self.window, out)
            self.emitted_end = self.next_window + self.window
            self.next_window += self.hop
            self.peaks = [(s, p) for s, p in self.peaks if s + FRAME > self.next_window - self.window]
        if final and upto > (self.emitted_end or 0):
            self._fixed_window(max(0, upto - self.window), upto, out)

    def _fixed_window(self, start: int, end: int, out: list) -> None:
        loudest = max((p for s, p in self.peaks if s + FRAME > start and s < end), default=-np.inf)
        if loudest > self.o.energy_floor_db and end - start >= self.min_speech:
            out.append((start, end))
            self.regions.append((start, end))


def merge_regions(regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching ranges merged (fixed windows overlap)."""
    merged: list[list[int]] = []
    for s, e in sorted(regions):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


__all__ = ["EnergyDetector", "FRAME", "SegmentOptions", "Segmenter", "SileroDetector", "make_detector", "merge_regions"]
