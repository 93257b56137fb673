"""Reading a request: SLA headers, body types, limits, multipart, request ids, arrival
time and API keys (pure, no Ray, no event loop)."""

from __future__ import annotations

import time

import pytest
from emodistill.data.audio import AudioError
from emodistill.serve.requests import (
    ApiError,
    MultipartLimits,
    MultipartReader,
    audio_error,
    check_api_key,
    content_length,
    media_kind,
    parse_keys,
    parse_sla,
    request_id,
    request_start,
)
TIERS = {"realtime": 20.0, "interactive": 100.0, "batch": 2000.0}


def sla(headers):
    return parse_sla(headers, TIERS, "interactive", 300.0)


def test_tiers_and_budgets():
    assert (sla({}).tier, sla({}).budget_ms) == ("interactive", 100.0)
    assert sla({"x-latency-tier": "Realtime"}).budget_ms == 20.0
    assert (sla({"x-latency-tier": "auto"}).tier, sla({"x-latency-tier": "auto"}).budget_ms) == ("auto", 300.0)
    explicit = sla({"x-latency-budget-ms": "35"})
    assert (explicit.tier, explicit.budget_ms) == ("custom", 35.0)
    both = sla({"x-latency-tier": "batch", "x-latency-budget-ms": "50"})
    assert (both.tier, both.budget_ms) == ("batch", 50.0)


@pytest.mark.parametrize(
    "headers,code",
    [
        ({"x-latency-tier": "ludicrous"}, "unknown_tier"),
        ({"x-latency-budget-ms": "fast"}, "invalid_budget"),
        ({"x-latency-budget-ms": "-5"}, "invalid_budget"),
        ({"x-latency-budget-ms": "0"}, "invalid_budget"),
        ({"x-latency-budget-ms": "2.5"}, "invalid_budget"),
        ({"x-latency-budget-ms": "inf"}, "invalid_budget"),
        ({"x-latency-budget-ms": "nan"}, "invalid_budget"),
    ],
)
def test_bad_sla_headers_are_400_with_a_hint(headers, code):
    with pytest.raises(ApiError) as err:
        sla(headers)
    assert (err.value.status, err.value.code) == (400, code)
    if code == "unknown_tier":
        assert "realtime" in err.value.message and "auto" in err.value.message


def test_content_types():
    assert media_kind("audio/wav") == "audio"
    assert media_kind("audio/flac; charset=binary") == "audio"
    assert media_kind("application/octet-stream") == "audio"
    assert media_kind("multipart/form-data; boundary=x") == "multipart"
    for bad in ["text/plain", "application/json", None, "image/png", "x" * 10_000]:
        with pytest.raises(ApiError) as err:
            media_kind(bad)
        assert (err.value.status, err.value.code) == (415, "unsupported_media_type")
        assert "audio/wav" in err.value.message and len(err.value.message) < 400


def test_declared_size_over_the_limit_is_413_before_reading():
    assert content_length({}, 100) is None
    assert content_length({"content-length": "100"}, 100) == 100
    with pytest.raises(ApiError) as err:
        content_length({"content-length": "101"}, 100)
    assert (err.value.status, err.value.code) == (413, "body_too_large")
    for bad in ["lots", "-1", "1e9", ""]:
        with pytest.raises(ApiError) as err:
            content_length({"content-length": bad}, 100)
        assert err.value.status == 400


# ---- multipart, streamed ------------------------------------------------------------------

B = "XyZ"
CT = f"multipart/form-data; boundary={B}"
FILE = b"RIFF\x00\x01\r\n--XyZ\xff" * 50  # binary, and holds the boundary text without its CRLF


def form(*parts: tuple[str, bytes], filename: bool = True, end: bool = True) -> bytes:
    out = b""
    for name, data in parts:
        fn = '; filename="a.wav"' if name == "file" and filename else ""
        out += f'--{B}\r\nContent-Disposition: form-data; name="{name}"{fn}\r\nContent-Type: audio/wav\r\n\r\n'.encode()
        out += data + b"\r\n"
    return out + (f"--{B}--\r\n".encode() if end else b"")


def parse(body: bytes, chunk: int | None = None, **limits) -> bytes:
    reader = MultipartReader(CT, MultipartLimits(**limits))
    step = chunk or len(body) or 1
    for i in range(0, len(body), step):
        reader.feed(body[i : i + step])
    return reader.finish()


def test_multipart_file_field_streamed_in_any_chunks():
    body = form(("note", b"hello"), ("file", FILE))
    assert parse(body) == FILE
    assert parse(body, chunk=1) == FILE  # byte by byte, as a slow client sends it
    assert parse(body, chunk=7) == FILE
    assert parse(body + b"epilogue after the closing boundary") == FILE


@pytest.mark.parametrize(
    "body,limits,status,code",
    [
        (form(*[("f", b"x")] * 20, ("file", FILE)), {}, 400, "too_many_parts"),
        (form(("note", b"x" * 2000), ("file", FILE)), {"max_field_bytes": 1000}, 413, "part_too_large"),
        (form(("file", FILE)), {"max_file_bytes": 100}, 413, "body_too_large"),
        (form(("note", b"hi")), {}, 400, "missing_file"),
        (form(("file", FILE), ("file", FILE)), {}, 400, "bad_multipart"),
        (form(("file", FILE), end=False), {}, 400, "bad_multipart"),
        (b"no boundary anywhere" * 100, {}, 400, "bad_multipart"),
        (f"--{B}\r\n".encode() + b"X-Pad: " + b"a" * 10_000 + b"\r\n\r\n", {}, 400, "bad_multipart"),
        (f"--{B}\r\n".encode() + b"".join(b"H%d: v\r\n" % i for i in range(50)), {}, 400, "bad_multipart"),
    ],
    ids=["parts", "field-size", "file-size", "no-file", "two-files", "unterminated", "garbage", "long-header", "many-headers"],
)
def test_multipart_limits(body, limits, status, code):
    with pytest.raises(ApiError) as err:
        parse(body, chunk=4096, **limits)
    assert (err.value.status, err.value.code) == (status, code), err.value.message


def test_a_flood_of_tiny_parts_stops_at_the_part_limit():
    from emodistill.serve.hostile import multipart_flood

    content_type, body = multipart_flood(4 * 1024 * 1024)
    reader = MultipartReader(content_type, MultipartLimits(max_parts=8))
    fed = 0
    with pytest.raises(ApiError) as err:
        for i in range(0, len(body), 65536):
            reader.feed(body[i : i + 65536])
            fed += 65536
    assert err.value.code == "too_many_parts" and fed == 0  # refused inside the first 64 KiB


def test_multipart_needs_a_sane_boundary():
    for ct in ["multipart/form-data", "multipart/form-data; boundary=", f"multipart/form-data; boundary={'b' * 71}"]:
        with pytest.raises(ApiError) as err:
            MultipartReader(ct)
        assert err.value.code == "bad_multipart"
    assert MultipartReader('multipart/form-data; boundary="quoted-b"').limits == MultipartLimits()


# ---- request ids, arrival time, audio errors -----------------------------------------------


def test_request_ids_are_honoured_when_sane():
    assert request_id("abc-123_X.y:z") == "abc-123_X.y:z"
    assert request_id(" 7f3a ") == "7f3a"
    for insane in [None, "", "a b", "x" * 129, "é", "a\tb", "<script>"]:
        rid = request_id(insane)
        assert rid != insane and len(rid) == 32 and rid.isalnum()
    assert request_id(None) != request_id(None)


@pytest.mark.parametrize(
    "value",
    ["t={us}", "{us}", "t={ms}", "{ms}", "t={s:.3f}", "{s:.6f}", "{ns}"],
)
def test_x_request_start_formats(value):
    now_wall, now_perf = 1_700_000_000.0, 5000.0
    s = now_wall - 0.25
    text = value.format(s=s, ms=int(s * 1e3), us=int(s * 1e6), ns=int(s * 1e9))
    started = request_start(text, now_wall, now_perf)
    assert started == pytest.approx(now_perf - 0.25, abs=2e-3)


def test_x_request_start_absurd_values_are_ignored():
    now_wall, now_perf = time.time(), time.perf_counter()
    for bad in [None, "", "soon", "t=", "nan", "inf", "-5", "0", "t=12", str(int((now_wall - 3600) * 1e6))]:
        assert request_start(bad, now_wall, now_perf) is None, bad
    future = request_start(f"t={int((now_wall + 2) * 1e6)}", now_wall, now_perf)
    assert future == now_perf  # clock skew: counts as now, never as extra budget


def test_audio_errors_map_to_status_and_code():
    assert (audio_error(AudioError("sample_rate", "m")).status, audio_error(AudioError("sample_rate", "m")).code) == (
        422, "unsupported_sample_rate")
    assert audio_error(AudioError("non_finite", "m")).code == "non_finite_audio"
    assert audio_error(AudioError("too_large", "m")).status == 422
    assert audio_error(AudioError("something new", "m")).code == "invalid_audio"
    assert ApiError(400, "x", "m").body("r1") == {"error": {"code": "x", "message": "m", "request_id": "r1"}}


def test_api_keys():
    keys = parse_keys(" k1 , k2,,")
    assert keys == ["k1", "k2"]
    check_api_key(None, [])  # off
    check_api_key("Bearer k2", keys)
    for bad in [None, "k1", "Basic k1", "Bearer nope", "Bearer k1x", "Bearer "]:
        with pytest.raises(ApiError) as err:
            check_api_key(bad, keys)
        assert (err.value.status, err.value.code) == (401, "unauthorized")
        assert err.value.headers == {"WWW-Authenticate": "Bearer"}
