"""`emodistill.client` against a real Serve app over real HTTP (serve_configs/local.yaml
deployed as `serve run` deploys it): answers, typed errors, API keys, 503 + Retry-After."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import soundfile as sf

from conftest import _free_port, tone

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def wav(seconds=1.0, freq=220.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, freq=freq), 16000, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def endpoint(ray_local, served_checkpoint):
    import os

    from emodistill.serve.local import start_from_config
    from ray import serve

    overrides = [
        f"checkpoint={served_checkpoint}",
        "router.max_ongoing_requests=2",  # easy to overload
        "router.max_queued_requests=2",
        # API keys come from an environment variable of the router replica; HOME is one
        # every Ray worker inherits, so its value is this app's key
        "api_keys_env=HOME",
    ]
    url = start_from_config(ROOT / "serve_configs/local.yaml", overrides, port=_free_port())
    yield url, os.environ["HOME"]
    serve.shutdown()


def test_predict_a_file_or_bytes_with_a_tier_or_a_budget(endpoint, tmp_path):
    from emodistill.client import Client, ServerBusy

    url, key = endpoint
    path = tmp_path / "clip.wav"
    path.write_bytes(wav(1.2, 300))
    with Client(url, api_key=key) as client:
        for _ in range(3):  # a cold app's first calls may stall (the router then falls back): warm it
            client.predict(path, tier="batch")
        deep = client.predict(path, tier="batch")
        assert deep.exit == "exit_4" and deep.tier == "batch" and not deep.degraded and deep.attempts == 1, deep.body
        assert deep.label == max(deep.scores, key=deep.scores.get) and deep.client_ms >= deep.latency_ms > 0
        assert "total" in deep.server_timing and deep.body["block"] == 4
    with Client(url, api_key=key, max_retries=0) as client:
        # no exit answers in 1 ms: refused at once (custom budgets are not a degrade tier)
        with pytest.raises(ServerBusy) as err:
            client.predict(path.read_bytes(), budget_ms=1)
        assert (err.value.status, err.value.code, err.value.retry_after) == (503, "overloaded", 1.0)
        assert list(client.exits()["exits"]) == ["exit_1", "exit_2", "exit_3", "exit_4"]
        assert client.health()["status"] == "ok"


def test_errors_carry_the_servers_code_and_message(endpoint):
    from emodistill.client import ApiError, Client

    url, key = endpoint
    with Client(url, api_key=key) as client:
        for data, kwargs, status, code in [
            (b"garbage bytes", {}, 400, "invalid_audio"),
            (wav(31.0), {}, 422, "audio_too_long"),
            (wav(), {"tier": "warp"}, 400, "unknown_tier"),
        ]:
            with pytest.raises(ApiError) as err:
                client.predict(data, **kwargs)
            assert (err.value.status, err.value.code) == (status, code) and err.value.message
    with Client(url, api_key="wrong") as client, pytest.raises(ApiError) as err:
        client.predict(wav())
    assert (err.value.status, err.value.code) == (401, "unauthorized")
    with pytest.raises(ValueError, match="whole number"):
        Client(url).predict(wav(), budget_ms=2.5)


def test_503_is_retried_after_retry_after_within_a_bound(endpoint):
    from emodistill.client import Client, ServerBusy

    url, key = endpoint
    data = wav(20.0)

    def once(client):
        try:
            return client.predict(data, tier="batch")
        except ServerBusy as err:
            return err

    with Client(url, api_key=key, max_retries=0) as impatient, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: once(impatient), range(16)))
    busy = [a for a in answers if isinstance(a, ServerBusy)]
    assert busy, "16 concurrent requests against 2 ongoing + 2 queued all passed"
    assert all(b.status == 503 and b.retry_after == 1.0 and b.attempts == 1 for b in busy)
    with Client(url, api_key=key, max_retries=30, max_retry_wait_s=1.0) as patient, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: once(patient), range(16)))
    assert all(not isinstance(a, ServerBusy) for a in answers), [a for a in answers if isinstance(a, ServerBusy)]
    assert max(a.attempts for a in answers) > 1 and all(a.label in a.scores for a in answers)
