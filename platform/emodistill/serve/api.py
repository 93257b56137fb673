"""The HTTP API of the router: routes, body reading, decoding off the event loop, request
ids, OpenAPI, and the mapping of every failure to JSON. No Ray in here.

``make_api(router)`` builds the FastAPI app around a :class:`emodistill.serve.router.Router`::

    POST /v1/predict   audio body (or multipart `file`) -> the answer of one exit
    POST /v1/timeline  a recording -> NDJSON, one line per segment as it is classified
                       (emodistill.serve.timeline), then a summary line
    GET  /v1/exits     deployed exits, their UAR and expected latency
    GET  /healthz      200 while an exit can serve, 503 when none can
    GET  /docs, /openapi.json

One request, in order; each step refuses before the next one costs anything::

    arrival      request id (X-Request-Id if sane), start time (X-Request-Start if set)
    headers      API key 401, SLA 400, media type 415, Content-Length 413
    body         read with an idle and a total timeout (408), cut at the size limit
                 (413), a client gone before Content-Length is 400; a multipart body
                 is fed chunk by chunk to a streaming parser on the decode pool
    decode       on bounded thread pools (503 + Retry-After when full; long clips on
                 their own lane, see serve.decoding): header limits, block decoding
                 capped at the limits, non-finite samples refused, the rest clipped
    router       router.predict(wave, sla, started)

Every error is ``{"error": {"code", "message", "request_id"}}`` with the request id also
in the ``X-Request-Id`` header; unknown routes (404), wrong methods (405), invalid
parameters (400) and internal errors (500, no stack trace; logged with the request id)
included.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import time
from collections.abc import Callable
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emodistill.data.audio import AudioError
from emodistill.inference.segments import SegmentOptions
from emodistill.serve.decoding import PoolFull, RequestDecoder
from emodistill.serve.requests import (
    AUDIO_TYPES,
    FILE_FIELD,
    MULTIPART,
    REQUEST_ID_HEADER,
    REQUEST_START_HEADER,
    ApiError,
    MultipartReader,
    audio_error,
    audio_limits,
    check_api_key,
    content_length,
    media_kind,
    multipart_limits,
    parse_sla,
    request_id,
    request_start,
    timeline_limits,
    too_large,
)
from emodistill.serve.router import Router
from emodistill.serve.timeline import (
    NDJSON,
    SPOOL_MEMORY_BYTES,
    NdjsonResponse,
    Once,
    SegmentSource,
    TimelineStreams,
    first_segment,
    timeline_lines,
)

log = logging.getLogger("emodistill.serve")


# ---- response models (what /docs shows) ---------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable reason, e.g. `audio_too_long`, `overloaded`, `not_found`.")
    message: str = Field(description="What went wrong and what to send instead, for a person.")
    request_id: str = Field(description="The request's id (also the `X-Request-Id` header); quote it when reporting.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class CascadeStep(BaseModel):
    model_config = ConfigDict(extra="allow")
    exit: str = Field(description="Exit that answered this step, `exit_<block>`.")
    margin: float = Field(description="Its top-1 minus top-2 probability (the cascade stops once this reaches the threshold).")
    compute_ms: float = Field(description="Model time of the step, ms.")
    queue_ms: float = Field(description="Time the step waited in the exit replica's queue, ms.")


class PredictResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    label: str = Field(description="The most probable emotion.")
    scores: dict[str, float] = Field(description="Probability per label (they sum to 1).")
    exit: str = Field(description="Exit that answered, `exit_<block>`.")
    block: int = Field(description="Transformer blocks the answer computed.")
    tier: str = Field(description="Latency tier of the request (a configured tier, `auto`, or `custom` for an explicit budget).")
    budget_ms: float = Field(description="Latency budget of the request, ms.")
    degraded: bool = Field(description="True when a shallower exit answered than the budget asked for.")
    degraded_reason: str | None = Field(
        None,
        description="Why it was degraded: `over_budget` (no exit fitted; degrade tiers only), `load` (depth shed under "
        "pressure), or why the planned exit gave no answer (`timeout`, `expired`, `error`, `unavailable`, `saturated`).",
    )
    late: bool = Field(description="True when the answer came after the budget (by the server's clock, from arrival).")
    latency_ms: float = Field(description="Time from the request's arrival (or its X-Request-Start) to the answer, ms.")
    model: str | None = Field(None, description="Name of the served model.")
    version: str | None = Field(None, description="Version (content hash) of the served weights.")
    cascade: list[CascadeStep] | None = Field(None, description="Tier `auto`: the exits the cascade ran, in order.")
    stopped: Literal["confident", "budget", "deepest", "unavailable"] | None = Field(
        None,
        description="Tier `auto`: why the cascade stopped: `confident` (margin reached the threshold), `budget` (no "
        "deeper step fits the time left: the answer is the best the budget allowed), `deepest`, `unavailable`.",
    )
    request_id: str = Field(description="The request's id (also the `X-Request-Id` header).")


class ExitsResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: dict[str, Any] = Field(description="Name and version of the served weights.")
    labels: list[str] = Field(description="Labels in score order.")
    tiers: dict[str, float] = Field(description="Tier name -> budget, ms (`auto` is the cascade).")
    default_tier: str = Field(description="Tier of requests that name none.")
    exits: dict[str, dict[str, Any]] = Field(description="Per exit: block, UAR, profiled and expected latency, load.")


class HealthResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "unavailable"] = Field(description="`ok` while at least one exit can serve.")
    exits: dict[str, str] = Field(description="Exit -> `up`, `probation` (back after a cool-down, on trial) or `down`.")


def _errors(*statuses: int) -> dict:
    text = {
        400: "Bad request: SLA headers, body, multipart or audio that cannot be used",
        401: "Missing or wrong API key",
        408: "The request body stalled or took too long to arrive",
        413: "Request body (or a multipart part) over its size limit",
        415: "Content-Type is neither audio nor multipart/form-data",
        422: "Audio outside the limits: sample rate, channels, length, decoded size",
        500: "Internal error (logged with the request id; no details are sent)",
        503: "Refused at once: no exit is expected within the budget (`overloaded`), every exit is down "
        "(`unavailable`), or the decode queue is full (`busy`); retry after `Retry-After` seconds",
        504: "No exit answered within the request's deadline (`deadline_exceeded`); retry after `Retry-After` seconds",
    }
    return {s: {"model": ErrorResponse, "description": text[s]} for s in statuses}


AUDIO_BODY = {
    "required": True,
    "description": "One audio clip (wav, flac, ogg; any rate in the accepted range, channels averaged), "
    "or a multipart/form-data form whose `file` field holds it.",
    "content": {
        **{t: {"schema": {"type": "string", "format": "binary"}} for t in AUDIO_TYPES},
        MULTIPART: {
            "schema": {
                "type": "object",
                "required": [FILE_FIELD],
                "properties": {FILE_FIELD: {"type": "string", "format": "binary", "description": "The audio file."}},
            }
        },
    },
}


# ---- arrival: request id, start time, last-resort 500 --------------------------------------


class RequestContext:
    """ASGI middleware around every route: gives each request its id and start time at
    arrival, puts ``X-Request-Id`` on every response, and turns any exception that
    escaped the routes into a JSON 500 (logged here with its request id and traceback;
    the client gets neither trace nor details)."""

    def __init__(self, app: ASGIApp, echo_request_id: bool = True, on_error: Callable[[str], None] | None = None):
        self.app = app
        self.echo_request_id = echo_request_id
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrival = time.perf_counter()
        headers = Headers(scope=scope)
        rid = request_id(headers.get(REQUEST_ID_HEADER))
        started = request_start(headers.get(REQUEST_START_HEADER), time.time(), arrival)
        scope.setdefault("state", {})
        scope["state"].update(request_id=rid, started=arrival if started is None else started)
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
                if self.echo_request_id:
                    MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s %s %s: internal error", rid, scope.get("method"), scope.get("path"))
            if self.on_error is not None:
                self.on_error("internal")
            if not responded:
                err = ApiError(500, "internal", "internal error; quote the request id when reporting it")
                response = JSONResponse(err.body(rid), status_code=500)
                await response(scope, receive, send_with_id)


def _rid(request: Request) -> str:
    return getattr(request.state, "request_id", None) or request_id(None)


# ---- the app ------------------------------------------------------------------------------


def make_api(router: Router, api_keys: list[str] | None = None, echo_request_id: bool = True) -> FastAPI:
    """The FastAPI app of the router (its routes, error shapes and limits).

    ``echo_request_id=False`` leaves the ``X-Request-Id`` response header to a proxy that
    sets it already (Ray Serve's does, from the same request header).
    """
    args = router.args
    keys = list(api_keys or [])
    inputs = args.input
    decoder = RequestDecoder(
        audio_limits(args), inputs.decode_workers, inputs.decode_queue, inputs.long_decode_bytes, inputs.long_decode_queue
    )
    api = FastAPI(
        title="emodistill",
        summary="Speech emotion recognition; each request gets the deepest exit that meets its latency SLA.",
        version=str(router.model.get("version") or "0"),
    )
    api.add_middleware(RequestContext, echo_request_id=echo_request_id, on_error=router.metrics.error)
    api.state.decoder = decoder
    bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>` (when the server has API keys).")
    secured = [Security(bearer)] if keys else []

    def error_response(request: Request, err: ApiError) -> JSONResponse:
        router.metrics.error(err.code)
        return JSONResponse(err.body(_rid(request)), status_code=err.status, headers=err.headers)

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return error_response(request, err)

    @api.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        messages = {
            404: f"no route {request.url.path[:100]}; see /docs",
            405: f"{request.method} is not allowed on {request.url.path[:100]}; see /docs",
        }
        message = messages.get(err.status_code, str(err.detail))
        code = codes.get(err.status_code, "http_error")
        return error_response(request, ApiError(err.status_code, code, message, err.headers))

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        problems = "; ".join(f"{' '.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in err.errors()[:5])
        return error_response(request, ApiError(400, "bad_request", problems[:500]))

    def busy(err: PoolFull) -> ApiError:
        return ApiError(
            503, "busy", f"the server is decoding as many uploads as it can queue ({err}); retry later",
            {"Retry-After": str(args.retry_after_s)},
        )

    async def read_audio(
        request: Request, limit: int | None = None, timeout_s: float | None = None, sink: BinaryIO | None = None
    ) -> bytes:
        """The audio file of the request: the body, or its multipart ``file`` part; with
        ``sink`` (a spool file) the file goes there, written on the decode pool, and b"" is
        returned."""
        limit = args.max_body_bytes if limit is None else limit
        timeout_s = args.input.body_timeout_s if timeout_s is None else timeout_s
        kind = media_kind(request.headers.get("content-type"))
        declared = content_length(request.headers, limit)
        reader = (
            MultipartReader(request.headers["content-type"], multipart_limits(args, limit), sink)
            if kind == "multipart" else None
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                wait = min(args.input.body_idle_timeout_s, deadline - loop.time())
                try:
                    if wait <= 0:
                        raise asyncio.TimeoutError
                    message = await asyncio.wait_for(request.receive(), wait)
                except asyncio.TimeoutError:
                    raise ApiError(
                        408, "body_timeout",
                        f"the request body stalled after {size} bytes (at most {args.input.body_idle_timeout_s:g} s "
                        f"between pieces, {timeout_s:g} s in all)",
                    ) from None
                if message["type"] == "http.disconnect":
                    of = f" of the {declared} declared" if declared is not None else ""
                    raise ApiError(400, "body_incomplete", f"the connection closed after {size}{of} body bytes")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "body_too_large", too_large(limit))
                if chunk and (reader is not None or sink is not None):
                    try:
                        await decoder.run(reader.feed if reader is not None else sink.write, chunk)  # type: ignore[union-attr]
                    except PoolFull as err:
                        raise busy(err) from err
                elif chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            if declared is not None and size != declared:
                raise ApiError(400, "body_incomplete", f"the body has {size} bytes but Content-Length says {declared}")
        except BaseException:
            # a refusal's traceback keeps this frame alive until the garbage collector runs:
            # let go of what was read so far now
            chunks.clear()
            if reader is not None:
                reader.discard()
            raise
        return reader.finish() if reader is not None else b"".join(chunks)

    @api.post(
        "/v1/predict",
        summary="Classify the emotion of one audio clip",
        description="The body is one audio file, or a multipart/form-data form with a `file` field. "
        "`X-Latency-Tier` picks a configured tier (or `auto`, the confidence cascade); `X-Latency-Budget-Ms` "
        "sets the budget directly. The answer comes from the deepest exit expected to meet the budget.",
        response_model=PredictResponse,
        responses={
            200: {
                "headers": {
                    "X-Request-Id": {"description": "The request's id.", "schema": {"type": "string"}},
                    "X-Exit": {"description": "Exit that answered.", "schema": {"type": "string"}},
                    "Server-Timing": {"description": "decode, upload, exit calls and total, ms.", "schema": {"type": "string"}},
                }
            },
            **_errors(400, 401, 408, 413, 415, 422, 500, 503, 504),
        },
        openapi_extra={"requestBody": AUDIO_BODY},
        dependencies=secured,
    )
    async def predict(
        request: Request,
        x_latency_tier: Annotated[
            str | None, Header(alias="X-Latency-Tier", description="A configured tier (see GET /v1/exits) or `auto`.")
        ] = None,
        x_latency_budget_ms: Annotated[
            str | None, Header(alias="X-Latency-Budget-Ms", description="Budget in whole milliseconds; wins over the tier's.")
        ] = None,
        x_request_start: Annotated[
            str | None,
            Header(
                alias="X-Request-Start",
                description="When a load balancer received the request (`t=<us>`, `<ms>` or `<s.fraction>` since "
                "the epoch): the budget counts from then.",
            ),
        ] = None,
        x_request_id: Annotated[
            str | None, Header(alias="X-Request-Id", description="Your id for the request (1-128 of `[A-Za-z0-9._:/+=@~-]`); echoed.")
        ] = None,
    ):
        # the headers are parameters for the OpenAPI document; parse_sla reads them with their errors
        started = request.state.started
        check_api_key(request.headers.get("authorization"), keys)
        sla = parse_sla(request.headers, args.tiers, args.default_tier, args.cascade.budget_ms)
        t0 = time.perf_counter()
        data = await read_audio(request)
        t1 = time.perf_counter()
        try:
            wave = await decoder.decode(data)
        except (AudioError, PoolFull) as err:
            refusal = audio_error(err) if isinstance(err, AudioError) else busy(err)
        else:
            refusal = None
        del data  # up to max_body_bytes: not held while the exits work, nor by a refusal's traceback
        if refusal is not None:
            raise refusal
        decode_ms = (time.perf_counter() - t1) * 1000.0
        body, timings = await router.predict(wave, sla, started)
        timings[:0] = [("decode", decode_ms), ("upload", (t1 - t0) * 1000.0)]
        body["request_id"] = _rid(request)
        headers = {
            "X-Exit": body["exit"],
            "Server-Timing": ", ".join(f"{name};dur={ms:.2f}" for name, ms in timings),
        }
        return JSONResponse(body, headers=headers)

    timelines = TimelineStreams(inputs.timeline_streams)
    api.state.timelines = timelines

    @api.post(
        "/v1/timeline",
        summary="The emotion timeline of a recording, streamed: one NDJSON line per segment",
        description="The body is a recording (as for /v1/predict: an audio file or a multipart `file`), up to "
        "`input.timeline_max_seconds` long and `input.timeline_max_body_bytes` large; it is spooled to a temporary "
        "file and decoded block by block. Speech is found (`segment=vad`: `vad=silero` or `energy`; or `fixed` "
        "windows over everything), long speech cut into `window`-second windows every `hop` seconds, and each "
        "segment classified through the router as a /v1/predict clip would be: `X-Latency-Tier` / "
        "`X-Latency-Budget-Ms` apply per segment, its deadline starting when the segment is ready. The answer "
        "(`application/x-ndjson`) has one line per segment as soon as it is classified (the /v1/predict answer "
        "plus `start` and `end` in seconds), then `{\"summary\": {...}}` (segments, duration, speech regions, "
        "exits used). A failure after the stream started (the recording is corrupt part-way, every exit refuses) "
        "is an `{\"error\": {...}}` line, and the stream ends. A recording without speech gives only the summary.",
        response_class=StreamingResponse,  # for the document: NdjsonResponse is one
        responses={
            200: {
                "content": {NDJSON: {"schema": {"type": "string"}}},
                "description": "One JSON object per line: segments (see PredictResponse, plus `start`, `end`), "
                "then `summary`, or `error` on a failure mid-stream.",
            },
            **_errors(400, 401, 408, 413, 415, 422, 500, 503),
        },
        openapi_extra={"requestBody": AUDIO_BODY},
        dependencies=secured,
    )
    async def timeline(
        request: Request,
        segment: Annotated[
            Literal["vad", "fixed"], Query(description="`vad`: speech regions, windowed; `fixed`: windows over everything.")
        ] = "vad",
        vad: Annotated[
            Literal["silero", "energy"], Query(description="Voice-activity detector: silero-vad's model, or the energy detector.")
        ] = "silero",
        window: Annotated[float, Query(description="Segment length: longer speech is cut into windows of this many seconds.")] = 3.0,
        hop: Annotated[float, Query(description="Seconds between window starts (at most `window`).")] = 1.5,
        x_latency_tier: Annotated[
            str | None, Header(alias="X-Latency-Tier", description="A configured tier or `auto`, for every segment.")
        ] = None,
        x_latency_budget_ms: Annotated[
            str | None, Header(alias="X-Latency-Budget-Ms", description="Budget per segment in whole milliseconds.")
        ] = None,
        x_request_id: Annotated[
            str | None, Header(alias="X-Request-Id", description="Your id for the request; echoed.")
        ] = None,
    ):
        check_api_key(request.headers.get("authorization"), keys)
        sla = parse_sla(request.headers, args.tiers, args.default_tier, args.cascade.budget_ms)
        if not (math.isfinite(window) and args.min_audio_seconds <= window <= args.max_audio_seconds):
            raise ApiError(400, "bad_request", f"window must be in [{args.min_audio_seconds:g}, {args.max_audio_seconds:g}] s")
        if not (math.isfinite(hop) and 0 < hop <= window):
            raise ApiError(400, "bad_request", f"hop must be in (0, window = {window:g}] s")
        options = SegmentOptions(segment=segment, vad=vad, window=window, hop=hop)
        if not timelines.admit():
            raise ApiError(
                503, "busy", f"the server is segmenting as many recordings as it takes ({timelines.streams}); retry later",
                {"Retry-After": str(args.retry_after_s)},
            )
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, prefix="emodistill-timeline-")
        source = None
        try:
            await read_audio(request, inputs.timeline_max_body_bytes, inputs.timeline_body_timeout_s, spool)
            if spool.tell() == 0:
                raise ApiError(400, "empty_audio", "no audio: the request body is empty; send an audio file")
            source = SegmentSource(spool, options, timeline_limits(args), timelines.pool)
            first = await first_segment(source, busy)
        except BaseException:
            if source is not None:
                source.close()
            else:
                spool.close()
            timelines.release()
            raise
        def cleanup(source: SegmentSource = source) -> None:
            source.close()
            timelines.release()

        done = Once(cleanup)
        lines = timeline_lines(router, source, first, sla, _rid(request), busy, on_done=done)
        return NdjsonResponse(lines, done, headers={"Cache-Control": "no-store"})

    @api.get(
        "/v1/exits",
        summary="Deployed exits: block, validation UAR, expected latency",
        response_model=ExitsResponse,
        responses=_errors(400, 401),
        dependencies=secured,
    )
    async def exits(
        request: Request,
        seconds: Annotated[float, Query(description="Clip length the expected latencies are for, seconds.")] = 3.0,
    ):
        check_api_key(request.headers.get("authorization"), keys)
        if not 0 < seconds <= args.max_audio_seconds:
            raise ApiError(400, "bad_request", f"seconds must be in (0, {args.max_audio_seconds:g}]")
        return JSONResponse(router.describe_exits(seconds))

    @api.get(
        "/healthz",
        summary="Readiness: 200 while at least one exit can serve, 503 when none can",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "No exit can serve."}},
    )
    async def healthz():
        health = router.health()
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    return api
