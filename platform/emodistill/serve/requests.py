"""What a request asks for, read from its headers and body, with a clear 4xx for anything
wrong. Pure functions (no Ray, no FastAPI), so each rule is tested on its own.

Errors are :class:`ApiError` and become ``{"error": {"code", "message"}}`` with their status.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP

from emodistill.serve.config import TIER_AUTO

AUDIO_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac", "audio/x-flac", "audio/ogg", "application/octet-stream")
MULTIPART = "multipart/form-data"

TIER_HEADER = "x-latency-tier"
BUDGET_HEADER = "x-latency-budget-ms"


class ApiError(Exception):
    """A request the server will not answer as asked; ``code`` is machine-readable."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


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
            raise ApiError(400, "unknown_tier", f"X-Latency-Tier {tier!r} is not a tier here; use one of: {known}")
    budget: float | None = None
    if budget_text is not None:
        try:
            budget = float(budget_text.strip())
        except ValueError:
            budget = math.nan
        if not math.isfinite(budget) or budget <= 0 or budget != int(budget):
            raise ApiError(
                400, "invalid_budget", f"X-Latency-Budget-Ms must be a positive whole number of milliseconds, got {budget_text!r}"
            )
    if tier is None:
        tier = default_tier if budget is None else "custom"
    if budget is None:
        budget = cascade_budget_ms if tier == TIER_AUTO else tiers[tier]
    return Sla(tier=tier, budget_ms=budget)


def check_content_length(headers: Mapping[str, str], limit: int) -> None:
    """413 before reading a body whose declared size is over ``limit``."""
    text = headers.get("content-length")
    if text is None:
        return
    try:
        size = int(text)
    except ValueError as err:
        raise ApiError(400, "bad_request", f"Content-Length {text!r} is not a number") from err
    if size > limit:
        raise ApiError(413, "body_too_large", too_large(limit))


def too_large(limit: int) -> str:
    return f"request body is over the {limit} byte limit; send a shorter clip or compress it (FLAC)"


def audio_bytes(content_type: str | None, body: bytes) -> bytes:
    """The audio file in the body: the body itself, or the ``file`` field of a multipart form."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in AUDIO_TYPES:
        return body
    if media == MULTIPART:
        return multipart_file(content_type or "", body)
    accepted = ", ".join([*AUDIO_TYPES, MULTIPART + " (field 'file')"])
    shown = media or "none"
    raise ApiError(415, "unsupported_media_type", f"Content-Type {shown!r} is not accepted; send one of: {accepted}")


def multipart_file(content_type: str, body: bytes) -> bytes:
    """The ``file`` part of a multipart/form-data body."""
    if "boundary=" not in content_type:
        raise ApiError(400, "bad_multipart", "multipart body without a boundary in its Content-Type")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise ApiError(400, "bad_multipart", "the multipart body could not be parsed")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True) or b""
    raise ApiError(400, "missing_file", "the multipart form has no 'file' field; send the audio as file=@clip.wav")


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
