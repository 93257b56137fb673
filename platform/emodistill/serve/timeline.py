"""POST /v1/timeline: a recording in, one NDJSON line per segment out, as each is classified.

No Ray and no HTTP routing in here (the route is ``emodistill.serve.api``)::

    upload -> spool file (memory holds 1 MiB, the rest on disk)
           -> inference.timeline.iter_segments (block decoding + VAD, no model), stepped on
              the timeline pool's threads, one step at a time per stream, never on the event loop
           -> router.predict(segment, sla, started=when the segment was ready): the same planning,
              deadlines, admission and fallbacks as a /v1/predict clip, per segment
           -> {"start", "end", "label", "scores", "exit", "degraded", "latency_ms", ...}\\n

While the router classifies one segment the next is already being cut. The stream ends
with a ``{"summary": {...}}`` line, or, on a failure after the first line (the recording
turns out corrupt or over the length limit part-way, every exit refuses), with an
``{"error": {"code", "message", "request_id"}}`` line. A recording without speech gives
only the summary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import IO

from starlette.responses import StreamingResponse

from emodistill.data.audio import SAMPLE_RATE, AudioError, AudioLimits
from emodistill.inference.segments import SegmentOptions
from emodistill.inference.timeline import Timeline, iter_segments
from emodistill.serve.decoding import BoundedPool, PoolFull, _bare
from emodistill.serve.requests import ApiError, Sla, audio_error
from emodistill.serve.router import Router

log = logging.getLogger("emodistill.serve")

SPOOL_MEMORY_BYTES = 1024 * 1024  # of an upload, kept in memory before the spool file goes to disk
NDJSON = "application/x-ndjson"

Segment = tuple[int, int, "object"]


class TimelineStreams:
    """The timelines a router replica runs at once: ``streams`` at most (a fast refusal
    beyond), each stepping its segmenter on its own thread of a shared pool."""

    def __init__(self, streams: int):
        self.streams = streams
        self.active = 0
        self.pool = BoundedPool(streams, streams, "timeline")  # each stream runs one step at a time

    def admit(self) -> bool:
        if self.active >= self.streams:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1

    def shutdown(self) -> None:
        self.pool.shutdown()


class SegmentSource:
    """:func:`~emodistill.inference.timeline.iter_segments` over a spooled upload, one
    step at a time on the pool; closing it (any thread) waits for a step in progress."""

    def __init__(self, spool: IO[bytes], options: SegmentOptions, limits: AudioLimits, pool: BoundedPool):
        spool.seek(0)
        self.spool = spool
        self.pool = pool
        self.state = Timeline(source="<upload>", labels=[], exit="")
        self._segments = iter_segments(spool, options, limits, state=self.state)
        self._lock = threading.Lock()
        self._closed = False

    def _step(self) -> Segment | None:
        with self._lock:
            if self._closed:
                return None
            try:
                return next(self._segments)
            except StopIteration:
                return None

    async def next(self) -> Segment | None:
        """The next segment (None after the last); AudioError, PoolFull."""
        return await self.pool.run(_bare, self._step)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            self._segments.close()
            self.spool.close()

    def close(self) -> None:
        """Release the decoder and the spool file, off the event loop (a step may be running)."""
        threading.Thread(target=self._close, name="timeline-close", daemon=True).start()


def _line(doc: dict) -> bytes:
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


def _refusal(err: BaseException, busy) -> ApiError:
    if isinstance(err, ApiError):
        return err
    if isinstance(err, AudioError):
        return audio_error(err)
    if isinstance(err, PoolFull):
        return busy(err)
    raise err


async def first_segment(source: SegmentSource, busy) -> Segment | None:
    """The first segment, before the response starts: a recording that is not audio, is
    declared too long or cannot be decoded at all is an ordinary JSON error."""
    try:
        return await source.next()
    except (AudioError, PoolFull) as err:
        raise _refusal(err, busy) from None


async def timeline_lines(
    router: Router, source: SegmentSource, first: Segment | None, sla: Sla, request_id: str, busy,
    on_done=None,
) -> AsyncIterator[bytes]:
    """The NDJSON body: one line per classified segment, then the summary (or an error line)."""
    t0 = time.perf_counter()
    exits: Counter[str] = Counter()
    count = degraded = late = 0
    item = first
    upcoming: asyncio.Future | None = None
    try:
        while item is not None:
            upcoming = asyncio.ensure_future(source.next())  # cut the next while this one is classified
            upcoming.add_done_callback(_retrieve)  # its failure is reported below, or moot when the stream ended first
            start, end, wave = item
            item = None
            body, _ = await router.predict(wave, sla, time.perf_counter())  # its deadline starts now
            del wave
            count += 1
            exits[body["exit"]] += 1
            degraded += bool(body.get("degraded"))
            late += bool(body.get("late"))
            yield _line({"start": round(start / SAMPLE_RATE, 3), "end": round(end / SAMPLE_RATE, 3), **body,
                         "request_id": request_id})
            item, upcoming = await upcoming, None
        state = source.state
        yield _line({"summary": {
            "segments": count, "duration": state.duration, "speech": [list(r) for r in state.speech],
            "exits": dict(sorted(exits.items())), "degraded": degraded, "late": late,
            "elapsed_ms": round((time.perf_counter() - t0) * 1000.0, 3), "tier": sla.tier, "budget_ms": sla.budget_ms,
            "request_id": request_id,
        }})
    except (ApiError, AudioError, PoolFull) as err:
        yield _line(_refusal(err, busy).body(request_id))
    except Exception:
        log.exception("request %s: timeline: internal error after %d segments", request_id, count)
        yield _line(ApiError(500, "internal", "internal error; quote the request id when reporting it").body(request_id))
    finally:
        if upcoming is not None:
            upcoming.cancel()
        if on_done is not None:
            on_done()


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class Once:
    """``fn()`` the first time it is called, nothing after: the cleanup of a stream, which
    either the stream's end or the response's (a client gone before the first byte) runs."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self) -> None:
        fn, self.fn = self.fn, None
        if fn is not None:
            fn()


class NdjsonResponse(StreamingResponse):
    """A streamed NDJSON answer whose ``cleanup`` runs however the response ends: a
    generator that never started (the client left before the headers went out) runs no
    ``finally``, so the response runs it."""

    media_type = NDJSON

    def __init__(self, lines: AsyncIterator[bytes], cleanup: Once, **kwargs):
        super().__init__(lines, **kwargs)
        self.cleanup = cleanup

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.cleanup()
