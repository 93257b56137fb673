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
from emodistill.exit_profile import read_profile
from emodistill.serve.api import make_api
from emodistill.serve.config import ServeArgs
from emodistill.serve.predictor import ExitPredictor
from emodistill.serve.replica import ExitWorker
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

    async def call(self, method, payload, left_ms, return_state):
        self.calls += 1
        raise ExitCallError(UNAVAILABLE, "replica died")


def profile_of(checkpoint: str):
    return read_profile(str(Path(checkpoint).parent / "report"))


_PREDICTORS: dict = {}


def predictors(checkpoint) -> dict[str, ExitPredictor]:
    if checkpoint not in _PREDICTORS:  # loaded once per module: the cut models never change
        _PREDICTORS[checkpoint] = {name: ExitPredictor(checkpoint, name) for name in EXITS}
    return _PREDICTORS[checkpoint]


# budgets far above what a tiny model costs even on a loaded machine: these tests are about
# what the router does, not about this machine's speed
ROOMY = {"realtime": 1000.0, "interactive": 2000.0, "batch": 5000.0}


def fast_profile(checkpoint):
    """The served checkpoint's profile with every exit at 5-20 ms: what a quiet machine
    measures (the fixture's own profile is timed with 3 repeats on a busy one)."""
    from emodistill.exit_profile import make_profile

    real = profile_of(checkpoint)
    latency = {n: {"1": {"p50": 4.0 * b, "p95": 5.0 * b}, "2": {"p50": 6.0 * b, "p95": 7.5 * b}}
               for n, b in zip(EXITS, [1, 2, 3, 4])}
    return make_profile(model=real.model, labels=real.labels, device=real.device, uar={}, latency=latency)


def make_client(checkpoint, clients=None, keys=None, profile=None, **overrides) -> tuple[TestClient, Router]:
    overrides.setdefault("planning", {"probe_interval_s": None})  # no background calls to count
    overrides.setdefault("tiers", ROOMY)
    overrides.setdefault("cascade", {"budget_ms": 5000.0})
    args = ServeArgs(checkpoint=checkpoint, **overrides)
    preds = predictors(checkpoint)
    clients = clients or {name: LocalExitClient(ExitWorker(p)) for name, p in preds.items()}
    p = preds["exit_4"]
    profile = profile or profile_of(checkpoint)
    router = Router(args, profile, clients, p.labels, {"name": p.model_name, "version": p.version})
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
    assert (body["exit"], body["block"], body["tier"], body["budget_ms"]) == ("exit_4", 4, "batch", 5000.0)
    assert body["degraded"] is False and body["latency_ms"] > 0
    assert r.headers["x-exit"] == "exit_4"
    timing = r.headers["server-timing"]
    assert timing.startswith("decode;dur=") and "exit_4;dur=" in timing and "total;dur=" in timing
    assert body["version"] == ExitPredictor(served_checkpoint, "exit_1").version


def test_a_budget_no_exit_can_meet_is_refused_at_once_or_degraded_where_configured(client, served_checkpoint):
    r = client.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-budget-ms": "1"})
    assert (r.status_code, r.json()["error"]["code"], r.headers["retry-after"]) == (503, "overloaded", "1")
    assert "expected" in r.json()["error"]["message"]
    c, _ = make_client(served_checkpoint, degrade_tiers=["custom"])
    body = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-budget-ms": "1"}).json()
    # the soonest exit (on this tiny model any of them, within noise) answers, flagged
    assert (body["degraded"], body["degraded_reason"], body["tier"]) == (True, "over_budget", "custom")
    assert body["late"] is True  # never passed off as on time


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
    assert body["stopped"] == "deepest"
    direct = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-tier": "batch"}).json()
    np.testing.assert_allclose(list(body["scores"].values()), list(direct["scores"].values()), atol=1e-5)
    c0, _ = make_client(served_checkpoint, cascade={"threshold": 0.0, "budget_ms": 5000.0})
    body = c0.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-tier": "auto"}).json()
    assert [s["exit"] for s in body["cascade"]] == ["exit_1"] and body["stopped"] == "confident"  # always sure


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
    assert e["block"] == 2 and 0 <= e["uar"] <= 1 and e["expected_ms"] > e["service_ms"] > 0 and e["state"] == "up"
    assert exits["tiers"]["auto"] == 5000.0 and exits["default_tier"] == "interactive"
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_a_down_deep_exit_falls_back_and_is_ejected_only_after_failures_in_a_row(served_checkpoint):
    down = DownExitClient()
    c, router = make_client(served_checkpoint, eject_after_failures=3)
    router.clients["exit_4"] = down
    for i in range(3):
        r = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-tier": "batch"})
        body = r.json()
        assert (r.status_code, body["exit"], body["degraded"], body["degraded_reason"]) == (200, "exit_3", True, "unavailable")
        assert down.calls == i + 1  # one failure bars the exit for that request only
    # three in a row: ejected for the cool-down, the next request does not even try it
    body = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-tier": "batch"}).json()
    assert (body["exit"], body["degraded_reason"], down.calls) == ("exit_3", "unavailable", 3)
    assert c.get("/healthz").json()["exits"]["exit_4"] == "down"


def test_every_exit_down_is_503_with_retry_after_and_healthz_503(served_checkpoint):
    c, router = make_client(served_checkpoint, eject_after_failures=1)
    for name in EXITS:
        router.clients[name] = DownExitClient()
    r = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "unavailable"
    assert c.get("/healthz").status_code == 503


def test_cooldown_zero_tries_each_exit_once_and_ends(served_checkpoint):
    """unavailable_cooldown_s: 0 used to make the cascade retry a refusing exit forever."""
    c, router = make_client(served_checkpoint, unavailable_cooldown_s=0, eject_after_failures=1)
    downs = {name: DownExitClient() for name in EXITS}
    router.clients.update(downs)
    for tier in ["batch", "auto", "realtime"]:
        r = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "x-latency-tier": tier})
        assert (r.status_code, r.json()["error"]["code"]) == (503, "unavailable"), r.text
    assert all(d.calls <= 3 for d in downs.values()), {n: d.calls for n, d in downs.items()}


def test_api_keys_when_configured(served_checkpoint):
    c, _ = make_client(served_checkpoint, keys=["s3cret"])
    assert c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav"}).status_code == 401
    ok = c.post("/v1/predict", content=wav(), headers={"content-type": "audio/wav", "authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert c.get("/healthz").status_code == 200  # probes need no key


def test_observed_latency_replaces_the_profile(served_checkpoint):
    import asyncio

    from emodistill.serve.requests import Sla

    # the profile counts as a tenth of an observation: the first model time measured here takes over
    _, router = make_client(served_checkpoint, planning={"probe_interval_s": None, "prior_weight": 0.1, "quantile": 0.5})
    before = router.policy.describe(1.0, 0.0)["exit_4"]
    wave = tone(1.0).astype(np.float32)
    body, timings = asyncio.run(router.predict(wave, Sla("batch", 2000.0)))
    assert body["exit"] == "exit_4" and body["late"] is False and [t for t, _ in timings] == ["exit_4", "total"]
    seen = router.describe_exits(1.0)["exits"]["exit_4"]
    assert seen["observations"] == 1 and seen["in_flight"] == 0
    assert seen["service_ms"] != before["service_ms"]  # the model time measured here moved the estimate
    assert json.dumps(router.describe_exits())  # serialisable for GET /v1/exits


def test_a_stalled_exit_is_given_up_on_its_queued_calls_cancelled_and_a_shallower_one_answers(served_checkpoint):
    import asyncio

    from emodistill.serve.requests import Sla

    _, router = make_client(served_checkpoint, profile=fast_profile(served_checkpoint))
    worker = router.clients["exit_4"].worker
    wave = tone(1.0).astype(np.float32)

    async def go():
        worker.inject_fault("slow", delay_s=1.5, calls=1)
        first = asyncio.create_task(router.predict(wave, Sla("interactive", 1000.0)))
        await asyncio.sleep(0.1)  # its batch is stalled; the next two queue behind it
        rest = [asyncio.create_task(router.predict(wave, Sla("interactive", 1000.0))) for _ in range(2)]
        bodies = [b for b, _ in await asyncio.gather(first, *rest)]
        await asyncio.sleep(1.6)  # the stalled batch ends; the queue is looked at again
        return bodies

    bodies = asyncio.run(go())
    assert all(b["exit"] != "exit_4" and b["degraded_reason"] == "timeout" and not b["late"] for b in bodies), bodies
    assert (worker.stats.computed, worker.stats.cancelled) == (1, 2)


@pytest.mark.parametrize("factor, margin", [(1.5, 10.0), (2.0, 300.0)])
def test_the_time_kept_for_a_fallback_is_the_configured_reserve(served_checkpoint, factor, margin):
    """While a shallower exit could answer, the router waits on a deeper one until only
    fallback_factor x that exit's expected latency + fallback_margin_ms is left."""
    import time

    from emodistill.serve.policy import Decision

    planning = {"probe_interval_s": None, "stall_factor": None, "fallback_factor": factor, "fallback_margin_ms": margin}
    _, router = make_client(served_checkpoint, profile=fast_profile(served_checkpoint), planning=planning)
    now = time.perf_counter()
    deep = Decision("exit_4", router.policy.estimate("exit_4", 1.0, now).total_ms)
    fallback = router.policy.fallback_ms("exit_4", 1.0, now, {})
    assert fallback is not None
    assert router._patience(deep, 1.0, 1000.0, now, {}) == pytest.approx(1000.0 - (factor * fallback + margin))
    # too little time for both: wait on the deep exit until the deadline
    assert router._patience(deep, 1.0, factor * fallback + margin, now, {}) == pytest.approx(factor * fallback + margin)
