"""A bounded pool for the CPU work of requests (decoding audio, parsing multipart bodies),
so the event loop that accepts requests never runs it.

A fixed number of worker threads and a bounded wait: when ``workers + queue`` jobs are
already in the pool, a new job is refused at once (:class:`PoolFull`) instead of queueing
without end. A job counts until its thread is done with it, even when the request that
asked for it was cancelled (the client left), so the pool bounds the memory and CPU that
decoding holds at any moment, not just the requests still waiting.

libsndfile, soxr and numpy release the GIL while they work, so the threads run in
parallel with the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class PoolFull(RuntimeError):
    """The pool has as many jobs as it takes (running + waiting)."""


class BoundedPool:
    def __init__(self, workers: int, queue: int, name: str = "decode"):
        if workers < 1 or queue < 0:
            raise ValueError(f"workers must be >= 1 and queue >= 0, got {workers} and {queue}")
        self.workers = workers
        self.queue = queue
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
                raise PoolFull(f"{self._jobs} jobs in the pool ({self.workers} running, {self.queue} waiting at most)")
            self._jobs += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)  # runs when the thread finishes, or at cancel
        # a cancelled await cancels a job still waiting; a running job finishes and then counts down
        return await asyncio.wrap_future(future)

    def _done(self, _future) -> None:
        with self._lock:
            self._jobs -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
