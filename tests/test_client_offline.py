"""`emodistill.client` without a server (httpx's MockTransport): the request it sends,
503 + Retry-After handled without retries when asked. The real-HTTP tests are tests/test_client.py."""

from __future__ import annotations

import httpx
import pytest

from emodistill.client import Client, ServerBusy


def test_extra_headers_go_out_and_the_sla_headers_win():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("x-latency-budget-ms") == "3":
            return httpx.Response(503, headers={"Retry-After": "1"}, json={"error": {"code": "overloaded", "message": "no exit"}})
        return httpx.Response(200, json={"label": "a", "scores": {"a": 1.0}, "exit": "exit_1", "tier": "realtime"})

    with Client("http://test", max_retries=0, transport=httpx.MockTransport(answer)) as client:
        got = client.predict(b"RIFF", tier="realtime", content_type="audio/wav",
                             headers={"X-Request-Start": "t=1.5", "X-Latency-Tier": "batch"})
        assert got.exit == "exit_1" and got.body["tier"] == "realtime"
        with pytest.raises(ServerBusy) as err:
            client.predict(b"RIFF", budget_ms=3)
    assert err.value.status == 503 and err.value.code == "overloaded" and err.value.attempts == 1
    first = seen[0].headers
    assert first["x-request-start"] == "t=1.5" and first["x-latency-tier"] == "realtime"
    assert first["content-type"] == "audio/wav" and len(seen) == 2
