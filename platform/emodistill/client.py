"""A Python client for the emodistill serving API (``POST /v1/predict``, ``POST /v1/timeline``,
``GET /v1/exits``, ``GET /healthz``), over httpx.

    from emodistill.client import Client

    with Client("http://127.0.0.1:8000", api_key=None) as client:
        answer = client.predict("clip.wav", tier="realtime")      # or budget_ms=50, or bytes
        answer.label, answer.scores, answer.exit, answer.degraded, answer.client_ms
        for line in client.timeline("call.wav", tier="batch"):   # NDJSON, as segments are classified
            line.get("start"), line.get("label"), line.get("summary")

A 503 (the server sheds load) is retried after the server's ``Retry-After``, at most
``max_retries`` times, each wait capped at ``max_retry_wait_s``; then, like every other
error answer, it raises :class:`ApiError` carrying the server's
``{"error": {"code", "message"}}`` (:class:`ServerBusy` for 503). :class:`AsyncClient` is
the same over ``httpx.AsyncClient`` (open-loop load generators, async services).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

TIER_HEADER = "X-Latency-Tier"
BUDGET_HEADER = "X-Latency-Budget-Ms"
RETRY_STATUSES = (503, 429)
CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".wave": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
}


class ApiError(Exception):
    """An error answer of the server: HTTP ``status``, machine-readable ``code``, ``message``."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None, attempts: int = 1):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.attempts = attempts


class ServerBusy(ApiError):
    """503 (or 429) still, after the retries: the server is shedding load."""


@dataclass
class ServedPrediction:
    """The server's answer to one clip."""

    label: str
    scores: dict[str, float]
    exit: str
    tier: str | None
    budget_ms: float | None
    degraded: bool
    degraded_reason: str | None
    latency_ms: float | None  # the server's clock, from reading the request to answering
    client_ms: float  # this client's clock, retries and waits included
    attempts: int  # 1 + retries after 503
    server_timing: dict[str, float] = field(default_factory=dict)  # Server-Timing: name -> ms
    body: dict[str, Any] = field(default_factory=dict)  # the whole JSON answer (block, model, version, cascade, ...)


def sla_headers(tier: str | None, budget_ms: float | None) -> dict[str, str]:
    """The latency-tier headers of a request (the server validates them again)."""
    headers = {}
    if tier is not None:
        headers[TIER_HEADER] = str(tier)
    if budget_ms is not None:
        if not (isinstance(budget_ms, (int, float)) and math.isfinite(budget_ms) and budget_ms > 0 and float(budget_ms).is_integer()):
            raise ValueError(f"budget_ms must be a positive whole number of milliseconds, got {budget_ms!r}")
        headers[BUDGET_HEADER] = str(int(budget_ms))
    return headers


def audio_body(audio: str | os.PathLike | bytes, content_type: str | None = None) -> tuple[bytes, str]:
    """(bytes, Content-Type) of a file path or of bytes."""
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return bytes(audio), content_type or "application/octet-stream"
    path = Path(audio)
    return path.read_bytes(), content_type or CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def retry_after_seconds(value: str | None, default: float = 1.0) -> float:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``default`` when absent or unreadable."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def error_of(response: httpx.Response, attempts: int) -> ApiError:
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = f"http_{response.status_code}", response.text[:300] or response.reason_phrase
    retry = retry_after_seconds(response.headers.get("retry-after"), default=0.0) if "retry-after" in response.headers else None
    cls = ServerBusy if response.status_code in RETRY_STATUSES else ApiError
    return cls(response.status_code, code, message, retry, attempts)


def parse_server_timing(value: str | None) -> dict[str, float]:
    out = {}
    for item in (value or "").split(","):
        name, _, rest = item.strip().partition(";")
        for param in rest.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    out[name] = float(number)
                except ValueError:
                    pass
    return out


def prediction_of(response: httpx.Response, client_ms: float, attempts: int) -> ServedPrediction:
    body = response.json()
    return ServedPrediction(
        label=body["label"],
        scores=body["scores"],
        exit=body["exit"],
        tier=body.get("tier"),
        budget_ms=body.get("budget_ms"),
        degraded=bool(body.get("degraded", False)),
        degraded_reason=body.get("degraded_reason"),
        latency_ms=body.get("latency_ms"),
        client_ms=client_ms,
        attempts=attempts,
        server_timing=parse_server_timing(response.headers.get("server-timing")),
        body=body,
    )


class _Base:
    def __init__(self, url: str, api_key: str | None, max_retries: int, max_retry_wait_s: float):
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s

    def _wait(self, response: httpx.Response) -> float:
        return min(retry_after_seconds(response.headers.get("retry-after")), self.max_retry_wait_s)


class Client(_Base):
    """Synchronous client; one connection pool, reusable, closes with ``with`` or ``close()``."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_retry_wait_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ):
        super().__init__(url, api_key, max_retries, max_retry_wait_s)
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout, transport=transport)

    def predict(
        self,
        audio: str | os.PathLike | bytes,
        tier: str | None = None,
        budget_ms: float | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ServedPrediction:
        """Classify one clip (a file path or file bytes) under a latency tier or budget;
        ``headers``: more request headers (``X-Request-Id``, ``X-Request-Start``, ...)."""
        data, media = audio_body(audio, content_type)
        headers = {"Content-Type": media, **(headers or {}), **sla_headers(tier, budget_ms)}
        start = time.perf_counter()
        for attempt in range(1, self.max_retries + 2):
            response = self._http.post("/v1/predict", content=data, headers=headers)
            if response.status_code in RETRY_STATUSES and attempt <= self.max_retries:
                time.sleep(self._wait(response))
                continue
            if response.status_code != 200:
                raise error_of(response, attempt)
            return prediction_of(response, (time.perf_counter() - start) * 1000.0, attempt)
        raise AssertionError("unreachable")

    def timeline(
        self,
        audio: str | os.PathLike | bytes,
        tier: str | None = None,
        budget_ms: float | None = None,
        segment: str = "vad",
        vad: str = "silero",
        window: float = 3.0,
        hop: float = 1.5,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """``POST /v1/timeline``: the emotion timeline of a recording (a path, streamed from
        disk, or bytes), each segment's answer yielded as soon as the server sends it
        (``start``, ``end``, ``label``, ``scores``, ``exit``, ``degraded``, ...), then the
        ``{"summary": {...}}`` line. An error answer raises :class:`ApiError` (no retries:
        a recording is not resent); an error line after the stream started raises
        :class:`ApiError` with status 200 and the line's code."""
        media = content_type
        if isinstance(audio, (bytes, bytearray, memoryview)):
            body: Any = bytes(audio)
            media = media or "application/octet-stream"
            fh = None
        else:
            path = Path(audio)
            media = media or CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
            body = fh = open(path, "rb")
        headers = {"Content-Type": media, **(headers or {}), **sla_headers(tier, budget_ms)}
        params = {"segment": segment, "vad": vad, "window": window, "hop": hop}
        try:
            with self._http.stream("POST", "/v1/timeline", content=body, headers=headers, params=params) as response:
                if response.status_code != 200:
                    response.read()
                    raise error_of(response, 1)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    doc = json.loads(line)
                    if "error" in doc:
                        raise ApiError(200, str(doc["error"].get("code")), str(doc["error"].get("message")))
                    yield doc
        finally:
            if fh is not None:
                fh.close()

    def exits(self, seconds: float = 3.0) -> dict[str, Any]:
        """The deployed exits: block, UAR, expected latency for a ``seconds`` clip."""
        return self._get("/v1/exits", params={"seconds": seconds})

    def health(self) -> dict[str, Any]:
        """``/healthz``: 200 while an exit can serve; a 503 answer is returned, not raised."""
        response = self._http.get("/healthz")
        return response.json()

    def _get(self, path: str, params: dict | None = None) -> dict[str, Any]:
        response = self._http.get(path, params=params)
        if response.status_code != 200:
            raise error_of(response, 1)
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Base):
    """The same over ``httpx.AsyncClient``."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_retry_wait_s: float = 10.0,
        limits: httpx.Limits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        super().__init__(url, api_key, max_retries, max_retry_wait_s)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self.headers, timeout=timeout, limits=limits or httpx.Limits(max_connections=256),
            transport=transport,
        )

    async def predict(
        self,
        audio: str | os.PathLike | bytes,
        tier: str | None = None,
        budget_ms: float | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ServedPrediction:
        data, media = audio_body(audio, content_type)
        headers = {"Content-Type": media, **(headers or {}), **sla_headers(tier, budget_ms)}
        start = time.perf_counter()
        for attempt in range(1, self.max_retries + 2):
            response = await self._http.post("/v1/predict", content=data, headers=headers)
            if response.status_code in RETRY_STATUSES and attempt <= self.max_retries:
                await asyncio.sleep(self._wait(response))
                continue
            if response.status_code != 200:
                raise error_of(response, attempt)
            return prediction_of(response, (time.perf_counter() - start) * 1000.0, attempt)
        raise AssertionError("unreachable")

    async def exits(self, seconds: float = 3.0) -> dict[str, Any]:
        response = await self._http.get("/v1/exits", params={"seconds": seconds})
        if response.status_code != 200:
            raise error_of(response, 1)
        return response.json()

    async def health(self) -> dict[str, Any]:
        return (await self._http.get("/healthz")).json()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


__all__ = ["ApiError", "AsyncClient", "Client", "ServedPrediction", "ServerBusy"]
