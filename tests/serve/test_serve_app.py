"""The Serve application on a real local Ray cluster, called over real HTTP.

Deployed the way `serve run serve_configs/local.yaml` deploys it: the config's
import_path and args go through Serve's own app-builder call; only the checkpoint, roomy
budgets (these tests are about behaviour, not this machine's speed), two router replicas
and a short cool-down are swapped in. One app serves the whole module.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from conftest import _free_port, tone

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXITS = ["exit_1", "exit_2", "exit_3", "exit_4"]
APP = "emodistill"


def wav(seconds=1.0, freq=220.0):
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, freq=freq), 16000, format="WAV")
    return buf.getvalue()


def roomy_profile(checkpoint: str, path: Path) -> str:
    """exit_profile.json with generous latencies for this tiny model (20-30 ms per block at
    1 s): the fixture's own profile is timed 3 times on a busy machine, and the router
    replaces the profile with what it observes anyway."""
    from emodistill.exit_profile import make_profile, read_profile, write_profile

    real = read_profile(str(Path(checkpoint).parent / "report"))
    latency = {n: {"1": {"p50": 20.0 * b, "p95": 30.0 * b}, "2": {"p50": 30.0 * b, "p95": 45.0 * b}}
               for n, b in zip(EXITS, [1, 2, 3, 4])}
    profile = make_profile(model=real.model, labels=real.labels, device=real.device, uar={}, latency=latency)
    return write_profile(str(path), profile)


@pytest.fixture(scope="module")
def endpoint(ray_local, served_checkpoint, tmp_path_factory):
    from emodistill.serve.local import start_from_config
    from ray import serve

    overrides = [
        f"checkpoint={served_checkpoint}",
        f"profile={roomy_profile(served_checkpoint, tmp_path_factory.mktemp('profile'))}",
        "planning.stall_factor=null",  # a busy test machine's hiccups are no stalls
        "planning.fallback_margin_ms=100",  # nor is a fallback call slower than its estimate
        "tiers={realtime: 500, interactive: 1000, batch: 5000}",
        "cascade.threshold=1.0",  # never sure: the cascade walks every exit
        "router.num_replicas=2",
        "deployment.num_cpus=0.2",
        "router.num_cpus=0.2",
        "unavailable_cooldown_s=1",
        "planning.probe_interval_s=null",  # exit counters below count only what the tests send
        "input.timeline_max_body_bytes=4000000",
    ]
    yield start_from_config(ROOT / "serve_configs/local.yaml", overrides, port=_free_port())
    serve.shutdown()


def handle(name):
    from ray import serve

    return serve.get_deployment_handle(name, app_name=APP)


def stats(name) -> dict:
    return handle(name).stats.remote().result()


def fault(name, kind, delay_s=0.0, calls=None):
    handle(name).inject_fault.remote(kind, delay_s, calls).result()


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
    assert deep.json()["late"] is False and "exit_4;dur=" in deep.headers["server-timing"]
    # no exit can answer in 1 ms: refused at once, JSON, with Retry-After (not answered late)
    tight = post(endpoint, wav(), **{"x-latency-budget-ms": "1"})
    assert (tight.status_code, tight.json()["error"]["code"], tight.headers["retry-after"]) == (503, "overloaded", "1")
    exits = httpx.get(f"{endpoint}/v1/exits").json()
    assert list(exits["exits"]) == EXITS
    assert httpx.get(f"{endpoint}/healthz").json()["status"] == "ok"


def test_cascade_resumes_through_the_deeper_deployments(endpoint):
    """Tier auto with a never-satisfied threshold walks every exit, each continuing from
    the previous one's block output (shipped between replicas), and lands on the answer
    the deepest exit gives from the waveform."""
    data = wav(1.4, freq=300)
    body = post(endpoint, data, **{"x-latency-tier": "auto", "x-latency-budget-ms": "60000"}).json()
    direct = post(endpoint, data, **{"x-latency-tier": "batch"}).json()
    assert (body["tier"], body["exit"], body["degraded"], body["stopped"]) == ("auto", "exit_4", False, "deepest")
    assert [s["exit"] for s in body["cascade"]] == EXITS
    np.testing.assert_allclose(list(body["scores"].values()), list(direct["scores"].values()), atol=1e-5)


def test_calls_arriving_during_a_batch_are_batched_and_answer_as_alone(endpoint):
    """Calls that arrive while a batch runs form the next padded batch (an idle replica
    runs the first at once), and each clip gets the answer it gets alone."""
    exit_2 = handle("exit_2")
    fault("exit_2", "slow", 0.3, calls=1)  # the first batch runs long while the others arrive
    clips = [tone(0.5 + 0.1 * i, freq=150 + 20 * i).astype(np.float32) for i in range(8)]
    first = exit_2.predict.remote(clips[0], 60_000, False)
    time.sleep(0.1)  # an idle replica runs the first call at once; the others arrive during it
    together = [r.result() for r in [first] + [exit_2.predict.remote(c, 60_000, False) for c in clips[1:]]]
    sizes = [a.prediction.batch_size for a in together]
    assert sizes[0] < len(clips) and max(sizes) > 1, sizes  # the first batch did not wait for the others
    for clip, a in zip(clips, together):
        alone = exit_2.predict.remote(clip, 60_000, False).result()
        assert alone.prediction.batch_size == 1 and alone.queue_ms < 1000
        np.testing.assert_allclose(a.prediction.probabilities, alone.prediction.probabilities, atol=1e-5)


def test_work_whose_deadline_passed_in_the_queue_is_dropped_at_the_exit(endpoint):
    exit_3 = handle("exit_3")
    before = stats("exit_3")
    fault("exit_3", "slow", 0.5, calls=1)
    first = exit_3.predict.remote(tone(1.0).astype(np.float32), 60_000, False)
    time.sleep(0.1)  # the first call's batch is running
    late = [exit_3.predict.remote(tone(1.0, seed=i).astype(np.float32), 100, False) for i in range(4)]
    answers = [r.result() for r in late]
    assert first.result().prediction is not None
    assert all(a.expired and a.prediction is None for a in answers), [a.queue_ms for a in answers]
    after = stats("exit_3")
    assert after["computed"] - before["computed"] == 1  # only the first clip went through the model
    assert after["expired"] - before["expired"] == 4


def test_a_call_the_router_gives_up_on_is_cancelled_at_the_exit(endpoint):
    """exit_4 stalls: the router stops waiting when only a shallower exit can still make
    the deadline, cancels the call (Serve drops it from the replica's queue) and answers
    from a shallower exit, flagged."""
    before = stats("exit_4")
    fault("exit_4", "slow", 4.0, calls=1)
    sla = {"x-latency-budget-ms": "2000"}  # exit_4 would fit, were it not stalled; room for the fallback on a loaded CI box
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(post, endpoint, wav(), **sla)  # its batch stalls the replica
        queued = []
        for _ in range(2):  # wait behind it; 0.3 s apart, so their fallbacks do not queue at
            time.sleep(0.3)  # the same exit at the same instant (which can honestly be a 504)
            queued.append(pool.submit(post, endpoint, wav(), **sla))
        answers = [first.result()] + [q.result() for q in queued]
    bodies = [a.json() for a in answers]
    assert all(a.status_code == 200 for a in answers), [b.get("error") or b["exit"] for b in bodies]
    assert all(b["exit"] != "exit_4" and b["degraded"] and b["degraded_reason"] == "timeout" for b in bodies), bodies
    time.sleep(4.1)  # the stalled batch ends; the calls queued behind it were cancelled
    after = stats("exit_4")
    assert after["computed"] - before["computed"] == 1, (before, after)
    assert after["cancelled"] - before["cancelled"] == 2, (before, after)


def test_an_exit_that_raises_falls_back_with_json(endpoint):
    fault("exit_4", "raise")
    try:
        r = post(endpoint, wav(), **{"x-latency-tier": "batch"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["exit"], body["degraded"], body["degraded_reason"]) == ("exit_3", True, "error")
    finally:
        fault("exit_4", None)


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


def test_overload_is_shed_by_the_router_as_json_not_serve_plain_text(endpoint):
    data = wav(20.0)
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda _: post(endpoint, data, **{"x-latency-budget-ms": "150"}), range(24)))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 503, 504}, codes
    for a in answers:
        body = a.json()  # every answer is JSON, refusals included
        if a.status_code != 200:
            assert body["error"]["code"] in {"overloaded", "deadline_exceeded"} and a.headers["retry-after"] == "1"
    assert post(endpoint, wav()).status_code == 200  # and it recovers


def test_two_router_replicas_share_the_traffic(endpoint):
    # Serve's proxy sends a request to the less busy of two replicas: while one router still
    # works off the previous test's flood, every request goes to the other. Ask until both
    # have answered (a dead second replica never would).
    routers: set[str] = set()
    deadline = time.monotonic() + 60
    while len(routers) < 2 and time.monotonic() < deadline:
        routers.add(httpx.get(f"{endpoint}/v1/exits").json()["router"])
        time.sleep(0.05)
    assert len(routers) == 2, routers
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: post(endpoint, wav(), **{"x-latency-tier": "batch"}).status_code, range(16)))
    assert codes == [200] * 16


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
    assert (default["tier"], default["budget_ms"]) == ("interactive", 1000.0)
    custom = post(endpoint, wav(), **{"x-latency-budget-ms": "5000"}).json()
    assert (custom["tier"], custom["budget_ms"], custom["exit"]) == ("custom", 5000.0, "exit_4")


def test_timeline_streams_a_line_per_segment_through_the_router(endpoint):
    """POST /v1/timeline through Serve's proxy: NDJSON lines as segments are classified,
    the tier per segment, the summary; no speech, corrupt and over-long bodies."""
    import json

    from test_timeline_api import CALL, encode, silence

    def stream(data: bytes, **headers) -> tuple[httpx.Response, list[dict]]:
        with httpx.stream("POST", f"{endpoint}/v1/timeline", content=data, params={"vad": "energy"},
                          headers={"content-type": "audio/wav", **headers}, timeout=60) as r:
            r.read() if r.status_code != 200 else None
            lines = [json.loads(line) for line in r.iter_lines()] if r.status_code == 200 else []
        return r, lines

    r, lines = stream(encode(CALL), **{"x-latency-tier": "batch"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    *segments, summary = lines
    assert len(segments) == 3 and {(s["exit"], s["tier"]) for s in segments} == {("exit_4", "batch")}
    assert summary["summary"]["exits"] == {"exit_4": 3} and summary["summary"]["segments"] == 3
    r, lines = stream(encode(CALL), **{"x-latency-budget-ms": "1"})  # every exit refuses: an error line
    assert r.status_code == 200 and lines[-1]["error"]["code"] == "overloaded"
    r, lines = stream(encode(silence(3.0)))  # no speech: only the summary
    assert r.status_code == 200 and len(lines) == 1 and lines[0]["summary"]["segments"] == 0
    data = bytearray(encode(np.tile(CALL, 2), "FLAC"))
    data[3 * len(data) // 4: 3 * len(data) // 4 + 4000] = np.random.default_rng(0).bytes(4000)  # corrupt in its 2nd 10 s block
    r, lines = stream(bytes(data))
    assert "label" in lines[0] and lines[-1]["error"]["code"] == "invalid_audio"
    for data, status, code in [(b"garbage bytes", 400, "invalid_audio"), (b"\0" * 4_000_001, 413, "body_too_large")]:
        r, _ = stream(data)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    assert post(endpoint, wav()).status_code == 200


def test_healthz_is_503_when_every_exit_is_down_and_recovers(endpoint):
    for name in EXITS:
        fault(name, "raise")
    try:
        down = 0
        for _ in range(40):  # each router ejects an exit after 3 failures in a row
            r = post(endpoint, wav(), **{"x-latency-tier": "batch"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
            checks = [httpx.get(f"{endpoint}/healthz") for _ in range(6)]
            down = sum(c.status_code == 503 for c in checks)
            if down == len(checks):
                break
        assert down == 6
        assert checks[0].json()["status"] == "unavailable" and set(checks[0].json()["exits"].values()) == {"down"}
    finally:
        for name in EXITS:
            fault(name, None)
    # after their cool-downs (doubled for exits that failed their trial call) they come
    # back on probation, one call at a time, and answer again, at both router replicas
    # (each has its own cool-downs: the next test must not meet exits still down at one)
    deadline = time.time() + 30
    while time.time() < deadline:
        if all(httpx.get(f"{endpoint}/healthz").status_code == 200 for _ in range(6)):
            if all(post(endpoint, wav(), **{"x-latency-tier": "batch"}).status_code == 200 for _ in range(6)):
                break
        time.sleep(0.5)
    else:
        pytest.fail("the exits did not come back after their faults were cleared")


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
    sla = {"x-latency-budget-ms": "400"}  # far above exit_4's profile, far below a replica restart
    answers = [post(endpoint, wav(), **sla) for _ in range(3)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    first = answers[0].json()
    assert first["exit"] != "exit_4" and first["degraded"] is True
    assert first["degraded_reason"] in {"timeout", "unavailable", "expired"}
    # Serve replaces the replica; after the router's cool-down exit_4 answers again
    deadline = time.time() + 60
    while time.time() < deadline:
        status = serve.status().applications["emodistill"].deployments["exit_4"].status
        body = post(endpoint, wav(), **sla).json()
        if status == "HEALTHY" and body.get("exit") == "exit_4" and not body["degraded"]:
            break
        time.sleep(1)
    else:
        pytest.fail(f"exit_4 did not come back: {status}, last answer {body}")
    assert replica_of("exit_4") and replica_of("exit_4")[0]["name"] != victim["name"]
