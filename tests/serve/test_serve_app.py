"""The Serve application on a real local Ray cluster, called over real HTTP.

Deployed the way `serve run serve_configs/local.yaml` deploys it: the config's
import_path and args go through Serve's own app-builder call; only the checkpoint is
swapped for the test's.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from conftest import _free_port, tone

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def wav(seconds=1.0, freq=220.0):
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, freq=freq), 16000, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def endpoint(ray_local, served_checkpoint):
    from emodistill.serve.local import start_from_config
    from ray import serve

    overrides = [
        f"checkpoint={served_checkpoint}",
        "router.max_ongoing_requests=2",  # easy to overload
        "router.max_queued_requests=2",
        "cascade.threshold=1.0",  # never sure: the cascade walks every exit
    ]
    yield start_from_config(ROOT / "serve_configs/local.yaml", overrides, port=_free_port())
    serve.shutdown()


def post(url, data, **headers):
    return httpx.post(f"{url}/v1/predict", content=data, headers={"content-type": "audio/wav", **headers}, timeout=60)


def test_one_deployment_per_exit_each_with_its_cut_model(endpoint):
    from ray import serve

    status = serve.status().applications["emodistill"]
    assert set(status.deployments) == {"router", "exit_1", "exit_2", "exit_3", "exit_4"}
    for name in ["exit_1", "exit_4"]:
        handle = serve.get_deployment_handle(name, app_name="emodistill")
        d = handle.describe.remote().result()
        assert (d["exit"], d["block"]) == (name, int(name[5:]))
    p1 = serve.get_deployment_handle("exit_1", app_name="emodistill").describe.remote().result()["params"]
    p4 = serve.get_deployment_handle("exit_4", app_name="emodistill").describe.remote().result()["params"]
    assert p1 < p4


def test_tiers_route_to_shallow_or_deep_replicas(endpoint):
    deep = post(endpoint, wav(), **{"x-latency-tier": "batch"})
    assert deep.status_code == 200, deep.text
    assert deep.json()["exit"] == "exit_4" and deep.headers["x-exit"] == "exit_4"
    assert "exit_4;dur=" in deep.headers["server-timing"]
    tight = post(endpoint, wav(), **{"x-latency-budget-ms": "1"}).json()
    assert (tight["exit"], tight["degraded"], tight["degraded_reason"]) == ("exit_1", True, "over_budget")
    exits = httpx.get(f"{endpoint}/v1/exits").json()
    assert list(exits["exits"]) == ["exit_1", "exit_2", "exit_3", "exit_4"]
    assert httpx.get(f"{endpoint}/healthz").json()["status"] == "ok"


def test_cascade_resumes_through_the_deeper_deployments(endpoint):
    """Tier auto with a never-satisfied threshold walks every exit, each continuing from
    the previous one's block output (shipped between replicas), and lands on the answer
    the deepest exit gives from the waveform."""
    data = wav(1.4, freq=300)
    body = post(endpoint, data, **{"x-latency-tier": "auto", "x-latency-budget-ms": "60000"}).json()
    direct = post(endpoint, data, **{"x-latency-tier": "batch"}).json()
    assert (body["tier"], body["exit"], body["degraded"]) == ("auto", "exit_4", False)
    assert [s["exit"] for s in body["cascade"]] == ["exit_1", "exit_2", "exit_3", "exit_4"]
    np.testing.assert_allclose(list(body["scores"].values()), list(direct["scores"].values()), atol=1e-5)


def test_concurrent_calls_are_batched_dynamically(endpoint):
    """Calls arriving together at an exit deployment run as one padded batch, and each
    clip gets the answer it gets alone."""
    from ray import serve

    handle = serve.get_deployment_handle("exit_2", app_name="emodistill")
    clips = [tone(0.5 + 0.1 * i, freq=150 + 20 * i).astype(np.float32) for i in range(8)]
    together = [r.result() for r in [handle.predict.remote(c, False) for c in clips]]
    assert max(p.batch_size for p in together) > 1, [p.batch_size for p in together]
    for clip, p in zip(clips, together):
        alone = handle.predict.remote(clip, False).result()
        assert alone.batch_size == 1
        np.testing.assert_allclose(p.probabilities, alone.probabilities, atol=1e-5)


def test_bad_requests_are_4xx_and_the_server_keeps_answering(endpoint):
    cases = [
        (post(endpoint, b"garbage bytes"), 400, "invalid_audio"),
        (post(endpoint, b""), 400, "empty_audio"),
        (post(endpoint, wav(31.0)), 422, "audio_too_long"),
        (post(endpoint, wav(), **{"content-type": "text/plain"}), 415, "unsupported_media_type"),
        (post(endpoint, wav(), **{"x-latency-tier": "warp"}), 400, "unknown_tier"),
        (post(endpoint, wav(), **{"x-latency-budget-ms": "-1"}), 400, "invalid_budget"),
        (post(endpoint, b"\0" * (16 * 1024 * 1024 + 1)), 413, "body_too_large"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (code, response.text)
        assert response.json()["error"]["code"] == code
    assert post(endpoint, wav()).status_code == 200


def test_overload_gets_503_with_retry_after_not_an_unbounded_wait(endpoint):
    data = wav(20.0)
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda _: post(endpoint, data, **{"x-latency-tier": "batch"}), range(24)))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 503}, codes
    rejected = [a for a in answers if a.status_code == 503]
    assert rejected, f"24 concurrent requests against 2 ongoing + 2 queued all passed: {codes}"
    assert all(a.headers.get("retry-after") == "1" for a in rejected)
    assert 200 in codes
    assert post(endpoint, wav()).status_code == 200  # and it recovers


def test_every_tier_and_the_budget_header(endpoint):
    seen = {}
    for tier in ["realtime", "interactive", "batch", "auto"]:
        r = post(endpoint, wav(), **{"x-latency-tier": tier})
        assert r.status_code == 200, r.text
        seen[tier] = r.json()
        assert seen[tier]["tier"] == tier and seen[tier]["exit"] in {"exit_1", "exit_2", "exit_3", "exit_4"}
    assert seen["batch"]["exit"] == "exit_4"
    assert int(seen["realtime"]["block"]) <= int(seen["batch"]["block"])
    default = post(endpoint, wav()).json()
    assert (default["tier"], default["budget_ms"]) == ("interactive", 80.0)
    custom = post(endpoint, wav(), **{"x-latency-budget-ms": "5000"}).json()
    assert (custom["tier"], custom["budget_ms"], custom["exit"]) == ("custom", 5000.0, "exit_4")


def test_killed_exit_replica_degrades_then_serve_restarts_it(endpoint):
    import time

    import ray
    from ray import serve

    def replica_of(name):
        actors = ray.util.list_named_actors(all_namespaces=True)
        return [a for a in actors if a["name"].startswith("SERVE_REPLICA::") and f"#{name}#" in a["name"]]

    (victim,) = replica_of("exit_4")
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    # Serve queues calls to a restarting deployment; the router stops waiting when the
    # budget would no longer pay for a shallower exit, and answers from one
    sla = {"x-latency-budget-ms": "300"}  # far above exit_4's profile, far below a replica restart
    answers = [post(endpoint, wav(), **sla) for _ in range(3)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    first = answers[0].json()
    assert first["exit"] != "exit_4" and first["degraded"] is True
    assert first["degraded_reason"] in {"timeout", "unavailable"}
    # Serve replaces the replica; after the router's cool-down exit_4 answers again
    deadline = time.time() + 60
    while time.time() < deadline:
        status = serve.status().applications["emodistill"].deployments["exit_4"].status
        body = post(endpoint, wav(), **sla).json()
        if status == "HEALTHY" and body["exit"] == "exit_4" and not body["degraded"]:
            break
        time.sleep(1)
    else:
        pytest.fail(f"exit_4 did not come back: {status}, last answer {body}")
    assert replica_of("exit_4") and replica_of("exit_4")[0]["name"] != victim["name"]
