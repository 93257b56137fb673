"""Reading a request: SLA headers, body types, limits and API keys (pure, no Ray)."""

from __future__ import annotations

import pytest
from emodistill.serve.requests import (
    ApiError,
    audio_bytes,
    check_api_key,
    check_content_length,
    multipart_file,
    parse_keys,
    parse_sla,
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
    assert audio_bytes("audio/wav", b"RIFF") == b"RIFF"
    assert audio_bytes("audio/flac; charset=binary", b"fLaC") == b"fLaC"
    assert audio_bytes("application/octet-stream", b"x") == b"x"
    for bad in ["text/plain", "application/json", None, "image/png"]:
        with pytest.raises(ApiError) as err:
            audio_bytes(bad, b"x")
        assert (err.value.status, err.value.code) == (415, "unsupported_media_type")
        assert "audio/wav" in err.value.message


def test_multipart_file_field():
    boundary = "XyZ"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
        f"Content-Type: audio/wav\r\n\r\n"
    ).encode() + b"RIFF\x00\x01\r\n\xff" + f"\r\n--{boundary}--\r\n".encode()
    assert audio_bytes(f"multipart/form-data; boundary={boundary}", body) == b"RIFF\x00\x01\r\n\xff"
    no_file = f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--{boundary}--\r\n".encode()
    with pytest.raises(ApiError, match="no 'file' field"):
        multipart_file(f"multipart/form-data; boundary={boundary}", no_file)
    with pytest.raises(ApiError, match="boundary"):
        multipart_file("multipart/form-data", body)


def test_declared_size_over_the_limit_is_413():
    check_content_length({"content-length": "100"}, 100)
    with pytest.raises(ApiError) as err:
        check_content_length({"content-length": "101"}, 100)
    assert (err.value.status, err.value.code) == (413, "body_too_large")
    with pytest.raises(ApiError) as err:
        check_content_length({"content-length": "lots"}, 100)
    assert err.value.status == 400


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
