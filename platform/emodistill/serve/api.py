"""The HTTP API of the router: routes, body limits, decoding off the event loop, and the
mapping of every failure to ``{"error": {"code", "message"}}``. No Ray in here.

``make_api(router)`` builds the FastAPI app (``POST /v1/predict``, ``GET /v1/exits``,
``GET /healthz``, ``/docs``) around a :class:`emodistill.serve.router.Router`.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from emodistill.data.audio import AudioError
from emodistill.serve.requests import (
    ApiError,
    audio_bytes,
    check_api_key,
    check_content_length,
    parse_sla,
    too_large,
)
from emodistill.serve.router import Router


AUDIO_ERRORS = {
    "unreadable": (400, "invalid_audio"),
    "non_finite": (400, "invalid_audio"),
    "empty": (400, "empty_audio"),
    "silent": (400, "silent_audio"),
    "too_long": (422, "audio_too_long"),
    "too_short": (422, "audio_too_short"),
}


def audio_error(err: AudioError) -> ApiError:
    status, code = AUDIO_ERRORS.get(err.reason, (400, "invalid_audio"))
    return ApiError(status, code, str(err))


def make_api(router: Router, api_keys: list[str] | None = None):
    """The FastAPI app of the router (its routes, error shapes and limits)."""
    args = router.args
    keys = list(api_keys or [])
    api = FastAPI(
        title="emodistill",
        summary="Speech emotion recognition; each request gets the deepest exit that meets its latency SLA.",
        version=str(router.model.get("version") or "0"),
    )

    def error_response(err: ApiError) -> JSONResponse:
        router.metrics.error(err.code)
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @api.exception_handler(ApiError)
    async def _api_error(_request: Request, err: ApiError):
        return error_response(err)

    @api.exception_handler(HTTPException)
    async def _http_error(_request: Request, err: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(ApiError(err.status_code, codes.get(err.status_code, "http_error"), str(err.detail)))

    @api.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, err: RequestValidationError):
        return error_response(ApiError(400, "bad_request", str(err.errors())[:500]))

    async def read_body(request: Request) -> bytes:
        check_content_length(request.headers, args.max_body_bytes)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > args.max_body_bytes:
                raise ApiError(413, "body_too_large", too_large(args.max_body_bytes))
            chunks.append(chunk)
        return b"".join(chunks)

    @api.post(
        "/v1/predict",
        summary="Classify the emotion of one audio clip",
        description="Body: an audio file (audio/wav, audio/flac, audio/ogg, application/octet-stream) or "
        "multipart/form-data with a `file` field. Headers: `X-Latency-Tier` (a configured tier or `auto`) "
        "or `X-Latency-Budget-Ms`.",
    )
    async def predict(request: Request):
        started = time.perf_counter()
        check_api_key(request.headers.get("authorization"), keys)
        sla = parse_sla(request.headers, args.tiers, args.default_tier, args.cascade.budget_ms)
        data = audio_bytes(request.headers.get("content-type"), await read_body(request))
        t0 = time.perf_counter()
        try:
            wave = await run_in_threadpool(router.decode, data)
        except AudioError as err:
            raise audio_error(err) from err
        decode_ms = (time.perf_counter() - t0) * 1000.0
        body, timings = await router.predict(wave, sla, started)
        timings.insert(0, ("decode", decode_ms))
        headers = {
            "X-Exit": body["exit"],
            "Server-Timing": ", ".join(f"{name};dur={ms:.2f}" for name, ms in timings),
        }
        return JSONResponse(body, headers=headers)

    @api.get("/v1/exits", summary="Deployed exits: block, validation UAR, expected latency")
    async def exits(request: Request, seconds: float = 3.0):
        check_api_key(request.headers.get("authorization"), keys)
        if not 0 < seconds <= args.max_audio_seconds:
            raise ApiError(400, "bad_request", f"seconds must be in (0, {args.max_audio_seconds:g}]")
        return router.describe_exits(seconds)

    @api.get("/healthz", summary="Readiness: 200 while at least one exit can serve, 503 when none can")
    async def healthz():
        health = router.health()
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    return api
