"""Decoding request bodies off the event loop, in bounded pools.

The CPU work of a request (decoding its audio, parsing its multipart body) never runs on
the event loop that accepts requests. It runs on worker threads with a bounded wait:
when a pool already holds ``workers + queue`` jobs, the next one is refused at once
(:class:`PoolFull`, a 503 with Retry-After) instead of queueing without end. A job counts
until its thread is done with it, even when the request that asked for it was cancelled
(the client left), so a pool bounds the memory and CPU decoding holds at any moment.

Two lanes, so a short clip never waits behind a long one::

    short lane  `decode_workers` threads, `decode_queue` waiting: every body starts here;
                the header is read and checked (microseconds), then a clip declared short
                is decoded on the spot
    long lane   one thread, `long_decode_queue` waiting: clips declared to decode to more
                than `long_decode_bytes`, and streams of undeclared length (which may run
                to the cap: a decode bomb), one at a time

libsndfile, soxr and numpy release the GIL while they work, so the threads run beside
the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from emodistill.data.audio import AudioError, AudioLimits, check_header, decode_clip, read_header

T = TypeVar("T")


class PoolFull(RuntimeError):
    """The pool has as many jobs as it takes (running + waiting)."""


class BoundedPool:
    """``workers`` threads and at most ``queue`` jobs waiting for one."""

    def __init__(self, workers: int, queue: int, name: str = "decode"):
        if workers < 1 or queue < 0:
            raise ValueError(f"workers must be >= 1 and queue >= 0, got {workers} and {queue}")
        self.workers = workers
        self.queue = queue
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._jobs = 0  # submitted and not yet finished (running or waiting)

    @property
    def jobs(self) -> int:
        return self._jobs

    async def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on a worker thread; :class:`PoolFull` at once when the pool is full."""
        with self._lock:
            if self._jobs >= self.workers + self.queue:
                raise PoolFull(f"the {self.name} pool holds {self._jobs} jobs ({self.workers} running, {self.queue} waiting)")
            self._jobs += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)  # when the thread finishes the job, or it is cancelled unstarted
        # a cancelled await cancels a job still waiting; a running job finishes, then counts down
        return await asyncio.wrap_future(future)

    def _done(self, _future) -> None:
        with self._lock:
            self._jobs -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class RequestDecoder:
    """Request bodies -> clips, on the two lanes (see the module docstring)."""

    def __init__(self, limits: AudioLimits, workers: int, queue: int, long_bytes: int, long_queue: int):
        self.limits = limits
        self.long_bytes = long_bytes
        self.short = BoundedPool(workers, queue, "decode")
        self.long = BoundedPool(1, long_queue, "decode-long")

    async def decode(self, data: bytes) -> np.ndarray:
        """The clip in ``data``; :class:`AudioError` if unusable, :class:`PoolFull` if busy."""
        wave = await self.short.run(_bare, self._decode_if_short, data)
        if wave is None:
            wave = await self.long.run(_bare, decode_clip, data, self.limits)
        return wave

    async def run(self, fn: Callable[..., T], *args) -> T:
        """Other CPU work of a request (parsing a multipart chunk) on the short lane."""
        return await self.short.run(fn, *args)

    def is_long(self, frames: int | None, channels: int) -> bool:
        return frames is None or frames * channels * 4 > self.long_bytes

    def _decode_if_short(self, data: bytes) -> np.ndarray | None:
        if not data:
            raise AudioError("empty", "no audio: the request body is empty; send an audio file")
        header = read_header(data)
        check_header(header, self.limits)
        if self.is_long(header.frames, header.channels):
            return None
        return decode_clip(data, self.limits)

    def shutdown(self) -> None:
        self.short.shutdown()
        self.long.shutdown()


def _bare(fn: Callable[..., T], *args) -> T:
    """``fn(*args)``, its :class:`AudioError` raised without the decoder's frames: their
    locals (the samples decoded up to the cap) would otherwise live as long as the
    exception, which the request's handling keeps in reference cycles until the garbage
    collector runs. Unexpected errors keep their traceback for the log."""
    try:
        return fn(*args)
    except AudioError as err:
        raise err.with_traceback(None) from err.__cause__
