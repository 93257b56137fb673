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
import yaml

from conftest import _free_port, tone

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def wav(seconds=1.0, freq=220.0):
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, freq=freq), 16000, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def endpoint(ray_local, served_checkpoint):
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_configs/local.yaml").read_text()))
    spec = config.applications[0]
    args = {**spec.args, "checkpoint": served_checkpoint}
    args["router"] = {**args["router"], "max_ongoing_requests": 2, "max_queued_requests": 2}  # easy to overload
    args["cascade"] = {**args["cascade"], "threshold": 1.0}  # never sure: the cascade walks every exit
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = call_user_app_builder_with_args_if_necessary(import_attr(spec.import_path), args)
    serve.run(app, name=spec.name, route_prefix=spec.route_prefix)
    yield f"http://127.0.0.1:{port}"
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


def test_concurrent_requests_are_batched(endpoint):
    clips = [wav(0.5 + 0.1 * i, freq=150 + 20 * i) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda c: post(endpoint, c, **{"x-latency-tier": "batch"}), clips))
    ok = [(c, a.json()) for c, a in zip(clips, answers) if a.status_code == 200]
    assert len(ok) >= 4, [a.status_code for a in answers]  # the router takes 2 + 2 queued at once
    for clip, together in ok:  # padded together in a dynamic batch = alone
        alone = post(endpoint, clip, **{"x-latency-tier": "batch"}).json()
        np.testing.assert_allclose(list(together["scores"].values()), list(alone["scores"].values()), atol=1e-5)


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
