"""The HTTP surface without Ray: the real FastAPI app over in-process exits.

The error model everywhere (404, 405, 400, 500 without a trace), request ids, the
X-Request-Start clock, the bounded decode pool, stalled and truncated bodies, multipart
limits, and what /openapi.json documents.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf
from conftest import tone
from emodistill.serve.api import make_api
from emodistill.serve.config import ServeArgs
from emodistill.exit_profile import read_profile
from emodistill.serve.decoding import BoundedPool, PoolFull
from emodistill.serve.predictor import ExitPredictor
from emodistill.serve.replica import ExitWorker
from emodistill.serve.router import LocalExitClient, Router
from fastapi.testclient import TestClient

EXITS = ["exit_1", "exit_2"]
WAV = {"content-type": "audio/wav"}


def wav(seconds=1.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds), 16000, format="WAV")
    return buf.getvalue()


# budgets far above what a tiny model costs on a loaded machine: these tests are about the
# HTTP surface, not about this machine's speed (tests/serve/test_router_api.py tests the SLA)
ROOMY = {"realtime": 1000.0, "interactive": 2000.0, "batch": 5000.0}


def build(checkpoint: str, keys=None, **overrides) -> tuple[TestClient, Router]:
    overrides.setdefault("tiers", ROOMY)
    overrides.setdefault("planning", {"probe_interval_s": None})
    args = ServeArgs(checkpoint=checkpoint, exits=EXITS, **overrides)
    predictors = {name: ExitPredictor(checkpoint, name) for name in EXITS}
    profile = read_profile(str(Path(checkpoint).parent / "report"))
    p = predictors["exit_2"]
    router = Router(args, profile, {n: LocalExitClient(ExitWorker(q)) for n, q in predictors.items()}, p.labels,
                    {"name": p.model_name, "version": p.version})
    return TestClient(make_api(router, keys), raise_server_exceptions=False), router


@pytest.fixture(scope="module")
def app(served_checkpoint):
    return build(served_checkpoint, input={"body_idle_timeout_s": 0.3, "body_timeout_s": 1.0})


def error_of(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["code"] == code and len(err["message"]) > 5
    assert err["request_id"] == r.headers["x-request-id"]
    return err


def test_every_route_error_is_json_with_a_request_id(app):
    client, _ = app
    error_of(client.get("/v1/nothing"), 404, "not_found")
    error_of(client.get("/v1/predict"), 405, "method_not_allowed")
    error_of(client.delete("/healthz"), 405, "method_not_allowed")
    error_of(client.put("/", content=b"x"), 404, "not_found")
    err = error_of(client.get("/v1/exits", params={"seconds": "soon"}), 400, "bad_request")
    assert "seconds" in err["message"]
    error_of(client.post("/v1/predict", content=b"x", headers={"content-type": "text/csv"}), 415, "unsupported_media_type")


def test_an_internal_error_is_a_json_500_without_a_trace_and_is_logged(served_checkpoint, caplog):
    client, router = build(served_checkpoint)

    async def broken(*_args, **_kw):
        raise RuntimeError("secret internals at 0xdeadbeef")

    router.predict = broken
    with caplog.at_level(logging.ERROR, logger="emodistill.serve"):
        r = client.post("/v1/predict", content=wav(), headers={**WAV, "x-request-id": "trace-me-1"})
    err = error_of(r, 500, "internal")
    assert err["request_id"] == "trace-me-1"
    assert "secret" not in r.text and "Traceback" not in r.text and "0xdeadbeef" not in r.text
    logged = [rec for rec in caplog.records if "trace-me-1" in rec.getMessage()]
    assert logged and logged[0].exc_info is not None  # the trace stays server-side, with the id


def test_request_ids_on_answers_and_errors(app):
    client, _ = app
    ok = client.post("/v1/predict", content=wav(), headers={**WAV, "x-request-id": "client-42"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "client-42" and ok.json()["request_id"] == "client-42"
    fresh = client.post("/v1/predict", content=wav(), headers={**WAV, "x-request-id": "not sane at all"})
    rid = fresh.headers["x-request-id"]
    assert fresh.json()["request_id"] == rid != "not sane at all" and len(rid) == 32
    a, b = client.get("/healthz"), client.get("/healthz")
    assert a.headers["x-request-id"] != b.headers["x-request-id"]


def test_x_request_start_moves_the_clock_back(app):
    client, _ = app
    queued = f"t={int((time.time() - 0.4) * 1e6)}"  # a load balancer held it 400 ms
    body = client.post("/v1/predict", content=wav(), headers={**WAV, "x-latency-tier": "batch", "x-request-start": queued}).json()
    assert body["latency_ms"] >= 400
    body = client.post("/v1/predict", content=wav(), headers={**WAV, "x-latency-tier": "batch", "x-request-start": "t=12"}).json()
    assert body["latency_ms"] < 400  # absurd: ignored, timed from arrival


def test_hostile_audio_and_forms(app):
    from emodistill.serve import hostile

    client, _ = app
    cases = [
        (hostile.lying_flac(), "audio/flac", 422, "unsupported_sample_rate"),
        (hostile.wav_at(1), "audio/wav", 422, "unsupported_sample_rate"),
        (hostile.wav_at(16000, 0.5, channels=9), "audio/wav", 422, "too_many_channels"),
        (hostile.float_wav(float("nan")), "audio/wav", 400, "non_finite_audio"),
        (hostile.unknown_length_flac(seconds=40.0), "audio/flac", 422, "audio_too_long"),
        (*reversed(hostile.multipart_flood(1 << 20)), 400, "too_many_parts"),
    ]
    for data, media, status, code in cases:
        error_of(client.post("/v1/predict", content=data, headers={"content-type": media}), status, code)
    huge = client.post("/v1/predict", content=hostile.float_wav(1e35), headers=WAV)
    assert huge.status_code == 200 and abs(sum(huge.json()["scores"].values()) - 1) < 1e-4  # clipped, like training
    via_form = client.post("/v1/predict", files={"file": ("a.wav", wav(), "audio/wav")}, data={"note": "hi"})
    direct = client.post("/v1/predict", content=wav(), headers=WAV)
    assert via_form.json()["scores"] == direct.json()["scores"]


class Filled:
    """A pool held full for the block, as if that many uploads were being decoded."""

    def __init__(self, pool: BoundedPool):
        self.pool, self.n = pool, pool.workers + pool.queue

    def __enter__(self):
        with self.pool._lock:
            self.pool._jobs += self.n

    def __exit__(self, *exc):
        with self.pool._lock:
            self.pool._jobs -= self.n


def test_full_decode_pools_answer_503_at_once_and_long_clips_never_block_short_ones(app):
    from emodistill.serve import hostile

    client, _ = app
    decoder = client.app.state.decoder
    with Filled(decoder.short):
        r = client.post("/v1/predict", content=wav(), headers=WAV)
    error_of(r, 503, "busy")
    assert r.headers["retry-after"] == "1"
    undeclared = hostile.unknown_length_flac(seconds=2.0)  # may run to the cap: the long lane
    declared_long = hostile.wav_at(48000, seconds=25.0, channels=4)  # 19 MiB decoded: the long lane
    with Filled(decoder.long):
        error_of(client.post("/v1/predict", content=undeclared, headers={"content-type": "audio/flac"}), 503, "busy")
        error_of(client.post("/v1/predict", content=declared_long, headers=WAV), 503, "busy")
        assert client.post("/v1/predict", content=wav(3.0), headers=WAV).status_code == 200  # short lane
    assert client.post("/v1/predict", content=undeclared, headers={"content-type": "audio/flac"}).status_code == 200
    assert client.post("/v1/predict", content=wav(), headers=WAV).status_code == 200


def test_bounded_pool_counts_a_job_until_its_thread_is_done():
    release = threading.Event()

    async def scenario():
        pool = BoundedPool(workers=1, queue=1)
        running = asyncio.ensure_future(pool.run(release.wait, 5))
        waiting = asyncio.ensure_future(pool.run(time.sleep, 0))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolFull):
            await pool.run(time.sleep, 0)
        waiting.cancel()  # a job still waiting is dropped
        running.cancel()  # a running one is not: it holds its slot until the thread ends
        await asyncio.sleep(0.05)
        assert pool.jobs == 1
        release.set()
        for _ in range(100):
            if pool.jobs == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.jobs == 0
        assert await pool.run(sum, [1, 2]) == 3
        pool.shutdown()

    asyncio.run(scenario())


def call_asgi(app, headers: dict, messages: list, then: str, every_s: float = 0.0) -> tuple[int, dict]:
    """One POST /v1/predict straight into the ASGI app, its body from ``messages`` (one
    each ``every_s``), then ``then``: ``"stall"`` (nothing more ever arrives) or
    ``"disconnect"`` (the client is gone)."""

    async def run():
        queue = list(messages)
        sent: list[dict] = []

        async def receive():
            await asyncio.sleep(every_s)
            if queue:
                return queue.pop(0)
            if then == "stall":
                await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"", "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        }
        await asyncio.wait_for(app(scope, receive, send), 10)
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        return status, json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))

    return asyncio.run(run())


def test_a_stalled_body_is_408_and_a_truncated_one_400(app):
    client, _ = app  # body_idle_timeout_s 0.3, body_timeout_s 1
    data = wav()
    head = {"content-type": "audio/wav", "content-length": str(len(data))}
    part = [{"type": "http.request", "body": data[:1000], "more_body": True}]
    status, body = call_asgi(client.app, head, part, "stall")
    assert (status, body["error"]["code"]) == (408, "body_timeout")
    status, body = call_asgi(client.app, head, part, "disconnect")
    assert (status, body["error"]["code"]) == (400, "body_incomplete")
    short = [{"type": "http.request", "body": data[:1000], "more_body": False}]  # ends before Content-Length
    status, body = call_asgi(client.app, head, short, "disconnect")
    assert (status, body["error"]["code"]) == (400, "body_incomplete") and "Content-Length" in body["error"]["message"]
    # a trickle that never pauses long enough still meets the total timeout
    trickle = [{"type": "http.request", "body": b"\0", "more_body": True}] * 100
    status, body = call_asgi(client.app, head, trickle, "stall", every_s=0.1)
    assert (status, body["error"]["code"]) == (408, "body_timeout")


def test_healthz_is_503_json_when_no_exit_can_serve(app):
    client, router = app
    assert client.get("/healthz").json()["status"] == "ok"
    exits = router.policy.exits
    saved = {n: (e.ejected_until, e.probation) for n, e in exits.items()}
    try:
        for e in exits.values():  # every exit ejected for a minute
            e.ejected_until = time.perf_counter() + 60
        r = client.get("/healthz")
        assert r.status_code == 503 and r.json() == {"status": "unavailable", "exits": {n: "down" for n in EXITS}}
    finally:
        for n, e in exits.items():
            e.ejected_until, e.probation = saved[n]


def test_openapi_documents_the_body_headers_answers_and_errors(served_checkpoint):
    client, _ = build(served_checkpoint, keys=["k"])
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/predict"]["post"]
    content = op["requestBody"]["content"]
    assert {"audio/wav", "audio/flac", "application/octet-stream", "multipart/form-data"} <= set(content)
    assert content["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
    assert headers == {"X-Latency-Tier", "X-Latency-Budget-Ms", "X-Request-Start", "X-Request-Id"}
    assert op["security"] and "HTTPBearer" in spec["components"]["securitySchemes"]  # Authorization
    ok = op["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    assert "X-Request-Id" in ok["headers"]
    for status in ["400", "408", "413", "415", "422", "500", "503"]:
        assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    schemas = spec["components"]["schemas"]
    assert set(schemas["ErrorDetail"]["properties"]) == {"code", "message", "request_id"}
    assert {"label", "scores", "exit", "degraded", "request_id"} <= set(schemas["PredictResponse"]["properties"])
    assert client.get("/docs").status_code == 200


def test_a_refused_decode_bomb_leaves_no_samples_behind():
    """The error of a decode stopped at the cap must not keep the samples decoded so far
    alive (through its traceback) while the request's handling holds on to it."""
    import tracemalloc

    from emodistill.data.audio import AudioError, AudioLimits
    from emodistill.serve import hostile
    from emodistill.serve.decoding import RequestDecoder

    bomb = hostile.unknown_length_flac(seconds=60.0, rate=96000, channels=8)
    decoder = RequestDecoder(AudioLimits(), workers=1, queue=1, long_bytes=16 << 20, long_queue=1)
    tracemalloc.start()
    try:
        try:
            asyncio.run(decoder.decode(bomb))
        except AudioError as err:
            kept = err  # as a framework would, for a while
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        decoder.shutdown()
    assert kept.reason == "too_large" and peak > 4 << 20  # it did decode megabytes before the cap
    assert held < 1 << 20, f"{held} bytes still held by the error"
