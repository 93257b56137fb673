"""What one exit replica does with its calls, with no Ray: deadlines, length-aware
batches, counts. The Serve deployment (``emodistill.serve.app.ExitDeployment``) is a thin
wrapper; tests and benchmarks run :class:`ExitWorker` in-process.

    call (clip or block output, time left) -> queue -> batch (clips and padded seconds bounded)
        -> drop calls that expired or were cancelled -> ExitPredictor on a worker thread
        -> ExitAnswer (prediction, queue depth, queue wait, model time)

- Deadline: every call carries the time its caller will still wait for it (ms), not a
  wall-clock instant, so clocks of different machines never meet. The replica fixes the
  call's deadline on arrival (its own clock + that). A call whose deadline has passed
  when its batch is formed is not computed: it gets an ``expired`` answer.
- Cancellation: a call whose caller gave up (Serve cancels the request, which cancels the
  task awaiting it here) is dropped from the queue; a batch already running finishes
  without it.
- Batching: a call arriving at an idle replica runs at once; calls arriving while a batch
  runs form the next one, bounded by ``max_batch_size`` clips and ``max_batch_audio_s``
  padded audio seconds (clips x the longest one), so a 30 s clip is never padded
  together with many 1 s clips. The oldest call always goes into the next batch, so none
  starves. (Ray's ``@serve.batch`` forms the next batch while the previous one still runs:
  with no wait it hands over batches of one under load, with a wait it makes an idle
  replica's first call wait; hence this queue.)
- Each answer reports the replica's queue depth and the call's queue wait apart from its
  model time, which the router's load state needs (queue wait counted once).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emodistill.data.audio import SAMPLE_RATE
from emodistill.serve.predictor import BlockState, ExitPredictor, Prediction

UNHEALTHY_AFTER = 5  # failed batches in a row after which check_health fails (Serve restarts the replica)
PCM16 = 32768.0


def to_wire(wave: np.ndarray) -> np.ndarray:
    """A clip as it travels to an exit replica: int16 when that is lossless (audio that
    was 16-bit PCM at 16 kHz, the usual upload), else float32. Half the bytes keep a 3 s
    clip under Ray's 100 KB inline limit, which saves an object-store round trip per call."""
    scaled = wave * PCM16
    pcm = np.rint(scaled)
    if pcm.size and np.array_equal(pcm, scaled) and pcm.min() >= -PCM16 and pcm.max() < PCM16:
        return pcm.astype(np.int16)
    return wave


def from_wire(data: np.ndarray) -> np.ndarray:
    """The float32 clip back from :func:`to_wire`'s form (bit-exact)."""
    if data.dtype == np.int16:
        return data.astype(np.float32) / np.float32(PCM16)
    return data


@dataclass
class ExitAnswer:
    """One call's answer from an exit replica."""

    prediction: Prediction | None  # None when the call expired before it was computed
    replica: str  # which replica answered (the router counts replicas from these)
    depth: int  # calls still at this replica (queued or running) after this one
    queue_ms: float  # arrival -> its batch started
    compute_ms: float  # model time of its batch
    expired: bool = False
    batch_size: int = 0  # clips in its batch
    batch_audio_s: float = 0.0  # padded audio seconds of its batch (clips x the longest)
    state_ref: Any = None  # the block output as an object reference (Serve), instead of prediction.state


@dataclass
class WorkerStats:
    """What the replica did with its calls (``stats()`` of the deployment)."""

    received: int = 0
    computed: int = 0  # calls whose clip went through the model
    expired: int = 0  # dropped: deadline passed before compute
    cancelled: int = 0  # dropped: the caller gave up before compute
    failed: int = 0  # calls in batches that raised
    batches: int = 0
    failed_batches_in_a_row: int = 0
    largest_batch: int = 0
    largest_batch_audio_s: float = 0.0


@dataclass
class Fault:
    """An injected fault, for resilience tests: ``raise`` in the model call, or ``slow`` it
    down by ``delay_s``; for the next ``calls`` batches (None: until cleared)."""

    kind: str
    delay_s: float = 0.0
    calls: int | None = None


@dataclass
class _Call:
    kind: str  # predict | resume
    payload: Any  # np.ndarray | BlockState
    audio_s: float
    group: int  # calls of one batch share it: 0 for clips, the start block for block outputs
    return_state: bool
    arrived: float
    deadline: float
    future: asyncio.Future = field(repr=False)


class ExitWorker:
    """One exit's model behind a deadline-aware, length-bounded batch queue."""

    def __init__(
        self,
        predictor: ExitPredictor,
        *,
        max_batch_size: int = 8,
        max_batch_audio_s: float | None = 16.0,
        batch_wait_s: float = 0.0,
        state_dtype: str = "float32",
        replica: str = "local",
        nice: int = 0,
    ):
        self.predictor = predictor
        self.nice = nice
        self._niced: set[int] = set()  # compute threads already lowered
        self.max_batch_size = max_batch_size
        self.max_batch_audio_s = max_batch_audio_s
        self.batch_wait_s = batch_wait_s
        self.state_dtype = state_dtype
        self.replica = replica
        self.stats = WorkerStats()
        self.fault: Fault | None = None
        self._queue: deque[_Call] = deque()
        self._pending = 0  # calls received and not yet answered or dropped
        self._draining = False

    @property
    def exit(self) -> str:
        return self.predictor.exit

    @property
    def depth(self) -> int:
        return self._pending

    # ---- calls -------------------------------------------------------------------------
    async def predict(self, wave: np.ndarray, left_ms: float, return_state: bool = False) -> ExitAnswer:
        wave = from_wire(wave)
        return await self._submit("predict", wave, len(wave) / SAMPLE_RATE, 0, left_ms, return_state)

    async def resume(self, state: BlockState, left_ms: float, return_state: bool = False) -> ExitAnswer:
        return await self._submit("resume", state, state.seconds, state.block, left_ms, return_state)

    async def _submit(self, kind: str, payload, audio_s: float, group: int, left_ms: float, return_state: bool) -> ExitAnswer:
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        call = _Call(kind, payload, audio_s, group, return_state, now, now + left_ms / 1000.0, loop.create_future())
        self.stats.received += 1
        self._pending += 1
        self._queue.append(call)
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await call.future  # a caller that gives up cancels it; the queue then drops the call

    # ---- the queue ---------------------------------------------------------------------
    async def _drain(self) -> None:
        """Run batches while calls wait; ends when the queue is empty (no idle task)."""
        try:
            while self._queue:
                if self.batch_wait_s > 0 and not self._full():
                    await asyncio.sleep(self.batch_wait_s)
                batch = self._take_batch()
                if batch:
                    await self._compute(batch)
        finally:
            self._draining = False

    def _full(self) -> bool:
        head = self._queue[0]
        same = [c for c in self._queue if (c.kind, c.group) == (head.kind, head.group)]
        if len(same) >= self.max_batch_size:
            return True
        return self.max_batch_audio_s is not None and len(same) * max(c.audio_s for c in same) >= self.max_batch_audio_s

    def _drop(self, call: _Call, now: float) -> bool:
        """Drop a call that was cancelled or whose deadline has passed; True if dropped."""
        if call.future.done():  # cancelled by its caller
            self.stats.cancelled += 1
        elif now >= call.deadline:
            self.stats.expired += 1
            waited = (now - call.arrived) * 1000.0
            call.future.set_result(ExitAnswer(None, self.replica, self._pending - 1, waited, 0.0, expired=True))
        else:
            return False
        self._pending -= 1
        return True

    def _take_batch(self) -> list[_Call]:
        """The next batch: the oldest live call plus, in arrival order, every later call of
        the same kind that keeps the batch within both bounds."""
        now = time.perf_counter()
        batch: list[_Call] = []
        kept: deque[_Call] = deque()
        longest = 0.0
        while self._queue:
            call = self._queue.popleft()
            if self._drop(call, now):
                continue
            if not batch:
                batch.append(call)
                longest = call.audio_s
                continue
            fits = (call.kind, call.group) == (batch[0].kind, batch[0].group) and len(batch) < self.max_batch_size
            if fits and self.max_batch_audio_s is not None:
                fits = (len(batch) + 1) * max(longest, call.audio_s) <= self.max_batch_audio_s
            if fits:
                batch.append(call)
                longest = max(longest, call.audio_s)
            else:
                kept.append(call)
        self._queue = kept
        return batch

    async def _compute(self, batch: list[_Call]) -> None:
        start = time.perf_counter()
        kind = batch[0].kind
        payloads = [c.payload for c in batch]
        want_state = any(c.return_state for c in batch)
        try:
            preds = await asyncio.to_thread(self._model, kind, payloads, want_state)
        except Exception as err:  # the replica answers every call; the router falls back
            self.stats.failed += len(batch)
            self.stats.failed_batches_in_a_row += 1
            self._pending -= len(batch)
            for c in batch:
                if not c.future.done():
                    c.future.set_exception(err)
            return
        compute_ms = (time.perf_counter() - start) * 1000.0
        s = self.stats
        s.batches += 1
        s.computed += len(batch)
        s.failed_batches_in_a_row = 0
        s.largest_batch = max(s.largest_batch, len(batch))
        s.largest_batch_audio_s = max(s.largest_batch_audio_s, len(batch) * max(c.audio_s for c in batch))
        self._pending -= len(batch)
        padded = len(batch) * max(c.audio_s for c in batch)
        for c, pred in zip(batch, preds):
            if not c.return_state:
                pred.state = None
            if not c.future.done():
                queue_ms = (start - c.arrived) * 1000.0
                c.future.set_result(
                    ExitAnswer(pred, self.replica, self._pending, queue_ms, compute_ms, batch_size=len(batch), batch_audio_s=padded)
                )

    def _model(self, kind: str, payloads: list, want_state: bool) -> list[Prediction]:
        if self.nice and threading.get_native_id() not in self._niced:  # per thread on Linux
            self._niced.add(threading.get_native_id())
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError):  # not Linux, or not allowed: compute at normal priority
                pass
        fault = self.fault
        if fault is not None:
            if fault.calls is not None:
                fault.calls -= 1
                if fault.calls <= 0:
                    self.fault = None
            if fault.kind == "raise":
                raise RuntimeError(f"injected fault in {self.exit}")
            time.sleep(fault.delay_s)
        if kind == "predict":
            return self.predictor.predict(payloads, want_state, self.state_dtype)
        return self.predictor.resume(payloads, want_state, self.state_dtype)

    # ---- health and tests --------------------------------------------------------------
    def check_health(self) -> None:
        """Raise when the model keeps failing (Serve then replaces the replica)."""
        if self.stats.failed_batches_in_a_row >= UNHEALTHY_AFTER:
            raise RuntimeError(f"{self.exit}: the last {self.stats.failed_batches_in_a_row} batches failed")

    def inject_fault(self, kind: str | None, delay_s: float = 0.0, calls: int | None = None) -> None:
        """``raise`` / ``slow`` the next ``calls`` batches (None: until cleared); None clears."""
        if kind not in (None, "raise", "slow"):
            raise ValueError(f"fault must be 'raise', 'slow' or None, got {kind!r}")
        self.fault = None if kind is None else Fault(kind, delay_s, calls)
        if kind is None:
            self.stats.failed_batches_in_a_row = 0
