"""The router's HTTP API without Ray: in-process exits behind the real FastAPI app.

Every bad request gets its 4xx JSON error and the next good request is still answered.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tone
from emodistill.serve.config import ServeArgs
from emodistill.serve.policy import ProfileSet
from emodistill.serve.predictor import ExitPredictor
from emodistill.serve.api import make_api
from emodistill.serve.router import (
    UNAVAILABLE,
    ExitCallError,
    LocalExitClient,
    Router,
)
from fastapi.testclient import TestClient

EXITS = ["exit_1", "exit_2", "exit_3", "exit_4"]


def wav(seconds=1.0, rate=16000, fmt="WAV", freq=220.0):
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, rate=rate, freq=freq), rate, format=fmt)
    return buf.getvalue()


class DownExitClient:
    """An exit whose deployment is gone: every call fails the way a dead replica does."""

    def __init__(self):
        self.calls = 0

    async def predict(self, wave, return_state=False):
        self.calls += 1
        raise ExitCallError(UNAVAILABLE, "replica died")

    async def resume(self, state, return_state=False):
        self.calls += 1
        raise ExitCallError(UNAVAILABLE, "replica died")


def profile_of(checkpoint: str) -> ProfileSet:
    text = (Path(checkpoint).parent / "report" / "exit_profile.json").read_text()
    return ProfileSet.from_json(text)


def make_client(checkpoint, clients=None, keys=None, **overrides) -> tuple[TestClient, Router]:
    args = ServeArgs(checkpoint=checkpoint, **overrides)
    predictors = {name: ExitPredictor(checkpoint, name) for name in EXITS}
    clients = clients or {name: LocalExitClient(p) for name, p in predictors.items()}
    p = predictors["exit_4"]
    router = Router(args, profile_of(checkpoint), clients, p.labels, {"name": p.model_name, "version": p.version})
    return TestClient(make_api(router, keys)), router


@pytest.fixture(scope="module")
def client(served_checkpoint):
    c, _ = make_client(served_checkpoint)
    return c


def test_predict_answers_with_the_documented_fields(client, served_checkpoint):
    r = client.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-tier": "batch"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"label", "scores", "exit", "block", "tier", "budget_ms", "degraded", "latency_ms", "model", "version"}
    assert body["label"] in body["scores"] and abs(sum(body["scores"].values()) - 1) < 1e-4
    assert (body["exit"], body["block"], body["tier"], body["budget_ms"]) == ("exit_4", 4, "batch", 2000.0)
    assert body["degraded"] is False and body["latency_ms"] > 0
    assert r.headers["x-exit"] == "exit_4"
    timing = r.headers["server-timing"]
    assert timing.startswith("decode;dur=") and "exit_4;dur=" in timing and "total;dur=" in timing
    assert body["version"] == ExitPredictor(served_checkpoint, "exit_1").version


def test_budget_picks_the_exit(client):
    # nothing meets 1 ms: the shallowest answers, flagged
    r = client.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-budget-ms": "1"})
    body = r.json()
    assert (body["exit"], body["degraded"], body["degraded_reason"], body["tier"]) == ("exit_1", True, "over_budget", "custom")


def test_same_answer_through_every_body_type(client):
    data = wav(1.2, rate=22050, fmt="FLAC")
    h = {"x-latency-tier": "batch"}
    a = client.post("/v1/predict", content=data, headers={**h, "content-type": "audio/flac"}).json()
    b = client.post("/v1/predict", content=data, headers={**h, "content-type": "application/octet-stream"}).json()
    c = client.post("/v1/predict", files={"file": ("clip.flac", data, "audio/flac")}, headers=h).json()
    assert a["scores"] == b["scores"] == c["scores"]


def test_auto_tier_runs_a_cascade(served_checkpoint):
    c, _ = make_client(served_checkpoint, cascade={"threshold": 1.0, "budget_ms": 10_000})
    body = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-tier": "auto"}).json()
    assert body["tier"] == "auto" and [s["exit"] for s in body["cascade"]] == EXITS  # never sure: all the way
    direct = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-tier": "batch"}).json()
    np.testing.assert_allclose(list(body["scores"].values()), list(direct["scores"].values()), atol=1e-5)
    c0, _ = make_client(served_checkpoint, cascade={"threshold": 0.0})
    body = c0.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-tier": "auto"}).json()
    assert [s["exit"] for s in body["cascade"]] == ["exit_1"]  # always sure: stops at once


@pytest.mark.parametrize(
    "kwargs,status,code",
    [
        ({"content": b"definitely not audio", "headers": {"content-type": "audio/wav"}}, 400, "invalid_audio"),
        ({"content": b"", "headers": {"content-type": "audio/wav"}}, 400, "empty_audio"),
        ({"content": wav(0.02), "headers": {"content-type": "audio/wav"}}, 422, "audio_too_short"),
        ({"content": wav(3.0), "headers": {"content-type": "audio/wav"}}, 422, "audio_too_long"),
        ({"content": b"x" * 600_001, "headers": {"content-type": "audio/wav"}}, 413, "body_too_large"),
        ({"content": wav(), "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"content": wav(), "headers": {"content-type": "audio/wav", "x-latency-tier": "warp"}}, 400, "unknown_tier"),
        ({"content": wav(), "headers": {"content-type": "audio/wav", "x-latency-budget-ms": "-3"}}, 400, "invalid_budget"),
        ({"content": wav(), "headers": {"content-type": "audio/wav", "x-latency-budget-ms": "soon"}}, 400, "invalid_budget"),
        ({"files": {"other": ("a.wav", wav(), "audio/wav")}}, 400, "missing_file"),
    ],
)
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(served_checkpoint, kwargs, status, code):
    c, _ = make_client(served_checkpoint, max_audio_seconds=2.0, max_body_bytes=600_000)
    r = c.post("/v1/predict", **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and len(err["message"]) > 10
    ok = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav"})
    assert ok.status_code == 200


def test_body_without_content_length_is_cut_at_the_limit(served_checkpoint):
    c, _ = make_client(served_checkpoint, max_body_bytes=1000)

    def chunks():
        for _ in range(10):
            yield b"\0" * 500

    r = c.post("/v1/predict", content=chunks(), headers={"content-type": "audio/wav"})
    assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large")


def test_unknown_routes_and_methods_keep_the_error_shape(client):
    assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"
    r = client.get("/v1/predict")
    assert (r.status_code, r.json()["error"]["code"]) == (405, "method_not_allowed")


def test_exits_health_and_docs(client):
    exits = client.get("/v1/exits").json()
    assert list(exits["exits"]) == EXITS
    e = exits["exits"]["exit_2"]
    assert e["block"] == 2 and 0 <= e["uar"] <= 1 and e["expected_latency_ms_3s"] > 0
    assert exits["tiers"]["auto"] == 200.0 and exits["default_tier"] == "interactive"
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_a_down_deep_exit_degrades_to_a_shallower_one(served_checkpoint):
    down = DownExitClient()
    c, router = make_client(served_checkpoint)
    router.clients["exit_4"] = down
    body = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-tier": "batch"}).json()
    assert (body["exit"], body["degraded"], body["degraded_reason"]) == ("exit_3", True, "unavailable")
    # marked down: the next request does not even try it during the cool-down
    body = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-tier": "batch"}).json()
    assert (body["exit"], body["degraded_reason"], down.calls) == ("exit_3", "unavailable", 1)
    assert c.get("/healthz").json()["exits"]["exit_4"] == "down"


def test_every_exit_down_is_503_with_retry_after(served_checkpoint):
    c, router = make_client(served_checkpoint)
    for name in EXITS:
        router.clients[name] = DownExitClient()
    r = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "overloaded"


def test_api_keys_when_configured(served_checkpoint):
    c, _ = make_client(served_checkpoint, keys=["s3cret"])
    assert c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav"}).status_code == 401
    ok = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert c.get("/healthz").status_code == 200  # probes need no key


def test_observed_latency_corrects_the_profile(served_checkpoint):
    _, router = make_client(served_checkpoint, ewma_alpha=1.0)
    import asyncio

    from emodistill.serve.requests import Sla

    wave = tone(1.0).astype(np.float32)
    asyncio.run(router.predict(wave, Sla("batch", 2000.0)))
    load = router.loads()["exit_4"]
    assert load.correction != 1.0 and 0.05 <= load.correction <= 50  # replaced by model time / profiled
    assert load.overhead_ms > 0  # the thread hop around the model call
    assert json.dumps(router.describe_exits())  # serialisable for GET /v1/exits
