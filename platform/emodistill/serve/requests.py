"""What a request asks for, read from its headers and body, with a clear 4xx for anything
wrong. Pure code (no Ray, no FastAPI, no event loop), so each rule is tested on its own.

Errors are :class:`ApiError` and become ``{"error": {"code", "message", "request_id"}}``
with their status (``emodistill.serve.api`` does the mapping).
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from emodistill.data.audio import AudioError, AudioLimits
from emodistill.serve.config import TIER_AUTO, ServeArgs

AUDIO_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac", "audio/x-flac", "audio/ogg", "application/octet-stream")
MULTIPART = "multipart/form-data"
FILE_FIELD = "file"

TIER_HEADER = "x-latency-tier"
BUDGET_HEADER = "x-latency-budget-ms"
REQUEST_ID_HEADER = "x-request-id"
REQUEST_START_HEADER = "x-request-start"

# python-multipart logs a warning for every malformed body before raising: a flood of
# bad bodies would be a flood of log lines. We report those errors ourselves.
logging.getLogger("python_multipart").setLevel(logging.ERROR)


class ApiError(Exception):
    """A request the server will not answer as asked; ``code`` is machine-readable."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self, request_id: str | None = None) -> dict:
        error = {"code": self.code, "message": self.message}
        if request_id is not None:
            error["request_id"] = request_id
        return {"error": error}


# ---- SLA ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sla:
    tier: str  # a configured tier, "auto", or "custom" (explicit budget without a tier)
    budget_ms: float


def parse_sla(headers: Mapping[str, str], tiers: Mapping[str, float], default_tier: str, cascade_budget_ms: float) -> Sla:
    """X-Latency-Tier / X-Latency-Budget-Ms -> the tier and budget of this request.

    An explicit budget wins over the tier's; no header gives the default tier.
    """
    tier = headers.get(TIER_HEADER)
    budget_text = headers.get(BUDGET_HEADER)
    if tier is not None:
        tier = tier.strip().lower()
        if tier != TIER_AUTO and tier not in tiers:
            known = ", ".join([*sorted(tiers), TIER_AUTO])
            raise ApiError(400, "unknown_tier", f"X-Latency-Tier {tier[:40]!r} is not a tier here; use one of: {known}")
    budget: float | None = None
    if budget_text is not None:
        try:
            budget = float(budget_text.strip())
        except ValueError:
            budget = math.nan
        if not math.isfinite(budget) or budget <= 0 or budget != int(budget):
            raise ApiError(
                400, "invalid_budget", f"X-Latency-Budget-Ms must be a positive whole number of milliseconds, got {budget_text[:40]!r}"
            )
    if tier is None:
        tier = default_tier if budget is None else "custom"
    if budget is None:
        budget = cascade_budget_ms if tier == TIER_AUTO else tiers[tier]
    return Sla(tier=tier, budget_ms=budget)


# ---- request ids and arrival time ----------------------------------------------------------

_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=@~-]{1,128}")


def request_id(given: str | None) -> str:
    """The client's (or load balancer's) ``X-Request-Id`` when it is a sane token (1-128
    visible characters of ``[A-Za-z0-9._:/+=@~-]``), else a new random one."""
    if given is not None and _SANE_ID.fullmatch(given.strip()):
        return given.strip()
    return uuid.uuid4().hex


def request_start(value: str | None, now_wall: float, now_perf: float, max_age_s: float = 300.0) -> float | None:
    """The ``time.perf_counter()`` value at which a load balancer received the request,
    from its ``X-Request-Start`` header, or None when absent or absurd.

    Formats: ``t=<value>`` or ``<value>``, the value in seconds since the epoch (nginx
    ``t=${msec}``: ``1700000000.123``), milliseconds (Heroku: ``1700000000123``),
    microseconds (``t=1700000000123456``) or nanoseconds, told apart by magnitude as New
    Relic does. A start in the future (clock skew) counts as now; one older than
    ``max_age_s`` or unparseable is ignored (the caller times from arrival).
    """
    if not value:
        return None
    text = value.strip()
    if text[:2].lower() == "t=":
        text = text[2:]
    try:
        stamp = float(text)
    except ValueError:
        return None
    if not math.isfinite(stamp) or stamp <= 0:
        return None
    for scale in (1.0, 1e3, 1e6, 1e9):  # seconds, ms, us, ns since the epoch
        if stamp / scale < 1e11:  # before the year 5138 in that unit
            seconds = stamp / scale
            break
    else:
        return None
    age = now_wall - seconds
    if age > max_age_s or age < -max_age_s:
        return None
    return now_perf - max(age, 0.0)


# ---- body ---------------------------------------------------------------------------------


def media_kind(content_type: str | None) -> str:
    """``"audio"`` for an audio body, ``"multipart"`` for a form; 415 for anything else."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in AUDIO_TYPES:
        return "audio"
    if media == MULTIPART:
        return "multipart"
    accepted = ", ".join([*AUDIO_TYPES, MULTIPART + " (field 'file')"])
    shown = media[:60] or "none"
    raise ApiError(415, "unsupported_media_type", f"Content-Type {shown!r} is not accepted; send one of: {accepted}")


def content_length(headers: Mapping[str, str], limit: int) -> int | None:
    """The declared body size (None without a Content-Length); 413 before reading a body
    declared over ``limit``, 400 for one that is not a size."""
    text = headers.get("content-length")
    if text is None:
        return None
    if not text.strip().isdigit():
        raise ApiError(400, "bad_request", f"Content-Length {text[:40]!r} is not a size in bytes")
    size = int(text)
    if size > limit:
        raise ApiError(413, "body_too_large", too_large(limit))
    return size


def too_large(limit: int) -> str:
    return f"request body is over the {limit} byte limit; send a shorter clip or compress it (FLAC)"


@dataclass(frozen=True)
class MultipartLimits:
    max_parts: int = 8  # parts of any kind, the file included
    max_field_bytes: int = 64 * 1024  # each part other than the file
    max_file_bytes: int = 16 * 1024 * 1024
    max_header_count: int = 8  # header lines per part
    max_header_bytes: int = 4096  # one header line


class MultipartReader:
    """The ``file`` part of a multipart/form-data body, parsed as the body streams in.

    ``feed(chunk)`` as chunks arrive (python-multipart's streaming parser: bounded work
    per byte, no buffering of the whole body), ``finish()`` when the body ended. Limits
    on the number of parts, each part's headers and each part's size are enforced while
    parsing, so a flood of tiny parts stops at part ``max_parts + 1``. Fields other than
    ``file`` are counted and dropped, never stored.
    """

    def __init__(self, content_type: str, limits: MultipartLimits = MultipartLimits(), sink: BinaryIO | None = None):
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError(400, "bad_multipart", "multipart body without a boundary in its Content-Type")
        if len(boundary) > 70:  # RFC 2046's limit; python-multipart takes up to 256
            raise ApiError(400, "bad_multipart", "multipart boundary is over 70 characters")
        self.limits = limits
        self.sink = sink  # the file part's bytes go here (a spool file) instead of memory
        self.parts = 0
        self._file: list[bytes] | None = None
        self._file_bytes = 0
        self._part_bytes = 0
        self._in_file = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition: bytes | None = None
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value_,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_end": self._end,
            },
            max_header_count=limits.max_header_count,
            max_header_size=limits.max_header_bytes,
        )

    def feed(self, chunk: bytes) -> None:
        if self._ended or not chunk:
            return  # the epilogue after the closing boundary is ignored
        try:
            self._parser.write(chunk)
        except MultipartParseError as err:
            raise ApiError(400, "bad_multipart", f"the multipart body is malformed ({str(err)[:120]})") from err

    def discard(self) -> None:
        """Drop the file bytes received so far (the request is refused)."""
        self._file = None
        self._ended = True

    def finish(self) -> bytes:
        """The file part (b"" when it went to ``sink``)."""
        if not self._ended:
            raise ApiError(400, "bad_multipart", "the multipart body ends before its closing boundary")
        if self._file is None:
            raise ApiError(400, "missing_file", "the multipart form has no 'file' field; send the audio as file=@clip.wav")
        return b"".join(self._file)

    # ---- parser callbacks -------------------------------------------------------------
    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise ApiError(400, "too_many_parts", f"the multipart body has over {self.limits.max_parts} parts; send only 'file'")
        self._disposition = None
        self._in_file = False
        self._part_bytes = 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        if params.get(b"name") == FILE_FIELD.encode():
            if self._file is not None:
                raise ApiError(400, "bad_multipart", "the multipart form has more than one 'file' field")
            self._file = []
            self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._in_file:
            self._file_bytes += n
            if self._file_bytes > self.limits.max_file_bytes:
                raise ApiError(413, "body_too_large", too_large(self.limits.max_file_bytes))
            if self.sink is not None:
                self.sink.write(data[start:end])
            else:
                self._file.append(bytes(data[start:end]))  # type: ignore[union-attr]
        else:
            self._part_bytes += n
            if self._part_bytes > self.limits.max_field_bytes:
                raise ApiError(
                    413, "part_too_large", f"a multipart field other than 'file' is over {self.limits.max_field_bytes} bytes"
                )

    def _end(self) -> None:
        self._ended = True


# ---- limits from the config ----------------------------------------------------------------


def audio_limits(args: ServeArgs) -> AudioLimits:
    """The decode limits of a request under ``args`` (silent clips are served)."""
    limits = args.input
    return AudioLimits(
        min_seconds=args.min_audio_seconds,
        max_seconds=args.max_audio_seconds,
        silence_peak=0.0,
        min_sample_rate=limits.min_sample_rate,
        max_sample_rate=limits.max_sample_rate,
        max_channels=limits.max_channels,
        max_decoded_bytes=limits.max_decoded_bytes,
    )


def timeline_limits(args: ServeArgs) -> AudioLimits:
    """The decode limits of a POST /v1/timeline recording: the clip limits' header checks,
    up to ``input.timeline_max_seconds`` long (decoded in blocks: no whole-file cap)."""
    limits = args.input
    return AudioLimits(
        min_seconds=0.0,
        max_seconds=limits.timeline_max_seconds,
        silence_peak=0.0,
        min_sample_rate=limits.min_sample_rate,
        max_sample_rate=limits.max_sample_rate,
        max_channels=limits.max_channels,
    )


def multipart_limits(args: ServeArgs, max_file_bytes: int | None = None) -> MultipartLimits:
    return MultipartLimits(
        max_parts=args.input.multipart_max_parts,
        max_field_bytes=args.input.multipart_max_field_bytes,
        max_file_bytes=args.max_body_bytes if max_file_bytes is None else max_file_bytes,
    )


AUDIO_ERRORS = {
    "unreadable": (400, "invalid_audio"),
    "empty": (400, "empty_audio"),
    "non_finite": (400, "non_finite_audio"),
    "silent": (400, "silent_audio"),
    "too_long": (422, "audio_too_long"),
    "too_short": (422, "audio_too_short"),
    "sample_rate": (422, "unsupported_sample_rate"),
    "channels": (422, "too_many_channels"),
    "too_large": (422, "audio_too_large"),
}


def audio_error(err: AudioError) -> ApiError:
    """The HTTP error of an :class:`AudioError` (its reason picks status and code)."""
    status, code = AUDIO_ERRORS.get(err.reason, (400, "invalid_audio"))
    return ApiError(status, code, str(err))


# ---- API keys -----------------------------------------------------------------------------


def check_api_key(authorization: str | None, keys: Sequence[str]) -> None:
    """401 unless ``Authorization: Bearer <key>`` names one of ``keys`` (constant-time compare)."""
    if not keys:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if not authorization or not authorization.lower().startswith("bearer "):
        raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'", challenge)
    given = authorization[7:].strip().encode()
    ok = False
    for key in keys:  # every key is compared, so timing does not tell which prefix matched
        ok |= hmac.compare_digest(given, key.encode())
    if not ok:
        raise ApiError(401, "unauthorized", "the API key is not valid", challenge)


def parse_keys(value: str | None) -> list[str]:
    return [k.strip() for k in (value or "").split(",") if k.strip()]
