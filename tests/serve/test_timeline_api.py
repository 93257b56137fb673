"""POST /v1/timeline without Ray: the real FastAPI app over in-process exits.

A recording streams back one NDJSON line per segment, then a summary; the SLA headers
apply per segment; no speech gives only the summary; corrupt input is a JSON 400 before
the stream starts or an error line after it did; over-long uploads and recordings are
refused like /v1/predict's; bad parameters are JSON 400s.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
from test_api import build, error_of

RATE = 16000
ENERGY = {"vad": "energy"}  # no model to load: these tests are about the HTTP surface


def speech(emotion: str, index: int) -> np.ndarray:
    from emodistill.data.synth import SynthConfig, synthesize_clip

    return synthesize_clip(SynthConfig(), 0, emotion, index).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def encode(wave: np.ndarray, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, RATE, format=fmt)
    return buf.getvalue()


CALL = np.concatenate([silence(1.0), speech("angry", 0), silence(2.0), speech("sad", 1), silence(1.5),
                       speech("happy", 2), silence(1.0)])  # three utterances, ~12.7 s


@pytest.fixture(scope="module")
def app(served_checkpoint):
    return build(served_checkpoint, input={"timeline_max_seconds": 30.0, "timeline_max_body_bytes": 2_000_000,
                                           "body_idle_timeout_s": 0.3, "body_timeout_s": 1.0})


def timeline(client, data: bytes, params=None, content_type="audio/wav", **headers):
    r = client.post("/v1/timeline", content=data, params={**ENERGY, **(params or {})},
                    headers={"content-type": content_type, **headers})
    lines = [json.loads(line) for line in r.text.splitlines()] if r.status_code == 200 else None
    return r, lines


def test_one_line_per_segment_then_a_summary(app):
    client, _ = app
    r, lines = timeline(client, encode(CALL), **{"x-request-id": "call-1"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    *segments, last = lines
    assert len(segments) == 3  # the utterances are under the 3 s window: one segment each
    for seg, (lo, hi) in zip(segments, [(1.0, 3.3), (5.4, 8.1), (9.9, 11.7)]):
        assert abs(seg["start"] - lo) < 0.15 and abs(seg["end"] - hi) < 0.15
        assert seg["label"] in seg["scores"] and abs(sum(seg["scores"].values()) - 1.0) < 1e-4
        assert seg["exit"] in {"exit_1", "exit_2"} and seg["degraded"] is False
        assert seg["latency_ms"] > 0 and seg["request_id"] == "call-1"
    summary = last["summary"]
    assert summary["segments"] == 3 and summary["duration"] == pytest.approx(CALL.size / RATE, abs=1e-3)
    assert len(summary["speech"]) == 3 and sum(summary["exits"].values()) == 3
    assert summary["request_id"] == "call-1" and summary["tier"] == "interactive"


def test_the_sla_headers_apply_per_segment(app):
    client, _ = app
    _, lines = timeline(client, encode(CALL), **{"x-latency-tier": "realtime"})
    assert {(s["tier"], s["budget_ms"]) for s in lines[:-1]} == {("realtime", 1000.0)}
    _, lines = timeline(client, encode(CALL), **{"x-latency-budget-ms": "4000"})
    assert {(s["tier"], s["budget_ms"], s["exit"]) for s in lines[:-1]} == {("custom", 4000.0, "exit_2")}
    assert lines[-1]["summary"]["exits"] == {"exit_2": 3}
    # every exit refuses (no exit answers in 1 ms): the stream ends with the router's refusal
    r, lines = timeline(client, encode(CALL), **{"x-latency-budget-ms": "1"})
    assert r.status_code == 200 and len(lines) == 1
    assert lines[0]["error"]["code"] == "overloaded" and lines[0]["error"]["request_id"] == r.headers["x-request-id"]
    # the server keeps serving
    assert timeline(client, encode(CALL))[1][-1]["summary"]["segments"] == 3


def test_long_speech_is_windowed_and_fixed_windows_cover_everything(app):
    client, _ = app
    _, lines = timeline(client, encode(CALL), params={"segment": "fixed", "window": 2.0, "hop": 2.0})
    segments = lines[:-1]
    assert len(segments) >= 5 and all(s["end"] - s["start"] <= 2.0 + 1e-3 for s in segments)
    long = np.concatenate([silence(0.5), speech("angry", 0), speech("sad", 1), speech("happy", 2), silence(0.5)])
    _, lines = timeline(client, encode(long), params={"window": 1.5, "hop": 1.0})
    assert len(lines) > 4 and all(s["end"] - s["start"] <= 1.5 + 1e-3 for s in lines[:-1])


@pytest.mark.parametrize("params", [ENERGY, {"vad": "silero"}, {"segment": "fixed"}])
def test_a_recording_without_speech_gives_only_the_summary(app, params):
    client, _ = app
    r, lines = timeline(client, encode(silence(4.0)), params=params)
    assert r.status_code == 200 and len(lines) == 1
    assert lines[0]["summary"]["segments"] == 0 and lines[0]["summary"]["duration"] == 4.0


def test_multipart_upload(app):
    client, _ = app
    r = client.post("/v1/timeline", params=ENERGY, files={"file": ("call.flac", encode(CALL, "FLAC"), "audio/flac")})
    assert r.status_code == 200, r.text
    assert json.loads(r.text.splitlines()[-1])["summary"]["segments"] == 3
    r = client.post("/v1/timeline", params=ENERGY, files={"other": ("x", b"y")})
    error_of(r, 400, "missing_file")


def test_corrupt_input_is_a_json_400_before_the_stream_or_an_error_line_in_it(app):
    client, _ = app
    r, _ = timeline(client, b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    error_of(r, 400, "invalid_audio")
    error_of(timeline(client, b"")[0], 400, "empty_audio")
    # a FLAC stream corrupt half-way: the segments before the fault, then an error line
    data = bytearray(encode(np.tile(CALL, 2), "FLAC"))  # 25 s: decoded in 10 s blocks, the fault is in the second
    n = len(data)
    data[3 * n // 4: 3 * n // 4 + 4000] = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    r, lines = timeline(client, bytes(data))
    assert r.status_code == 200
    assert len(lines) >= 2 and "label" in lines[0]
    assert lines[-1]["error"]["code"] == "invalid_audio" and "corrupt" in lines[-1]["error"]["message"]
    # a truncated upload (the body ends before its Content-Length) is refused before any work
    def short_body():
        yield encode(CALL)[:1000]

    r = client.post("/v1/timeline", content=short_body(), params=ENERGY,
                    headers={"content-type": "audio/wav", "content-length": "5000"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "body_incomplete"


def test_over_long_uploads_and_recordings_are_refused(app):
    client, _ = app
    big = encode(np.tile(CALL, 6))  # ~76 s of 16-bit WAV: 2.4 MB, over the 2 MB limit
    error_of(timeline(client, big)[0], 413, "body_too_large")
    error_of(timeline(client, encode(np.tile(CALL, 3)))[0], 422, "audio_too_long")  # 38 s > 30 s
    # /v1/predict keeps its clip limits (30 s)
    r = client.post("/v1/predict", content=encode(np.tile(CALL, 3)), headers={"content-type": "audio/wav"})
    error_of(r, 422, "audio_too_long")


def test_bad_parameters_and_headers_are_json_400s(app):
    client, _ = app
    data = encode(silence(1.0))
    for params in [{"window": "long"}, {"window": 0}, {"window": 1000}, {"window": 3, "hop": 4}, {"hop": 0},
                   {"segment": "words"}, {"vad": "webrtc"}, {"window": "nan"}]:
        r, _ = timeline(client, data, params=params)
        error_of(r, 400, "bad_request")
    error_of(timeline(client, data, **{"x-latency-tier": "warp"})[0], 400, "unknown_tier")
    error_of(timeline(client, data, content_type="text/csv")[0], 415, "unsupported_media_type")
    error_of(client.get("/v1/timeline"), 405, "method_not_allowed")


def test_openapi_documents_the_route(app):
    client, _ = app
    doc = client.get("/openapi.json").json()["paths"]["/v1/timeline"]["post"]
    assert "application/x-ndjson" in doc["responses"]["200"]["content"]
    assert {"segment", "vad", "window", "hop"} <= {p["name"] for p in doc["parameters"]}
    assert "multipart/form-data" in doc["requestBody"]["content"]


def test_every_stream_gives_back_its_slot_and_a_full_house_is_a_fast_503(app):
    client, _ = app
    timelines = client.app.state.timelines
    assert timelines.active == 0  # after every stream above: finished, refused, failed part-way
    timelines.active = timelines.streams
    try:
        r, _ = timeline(client, encode(CALL))
        error_of(r, 503, "busy")
        assert r.headers["retry-after"] == "1"
    finally:
        timelines.active = 0
    assert timeline(client, encode(CALL))[1][-1]["summary"]["segments"] == 3
    assert timelines.active == 0


def test_the_python_client_streams_the_timeline(app, tmp_path):
    from emodistill.client import ApiError, Client

    client, _ = app
    path = tmp_path / "call.flac"
    path.write_bytes(encode(CALL, "FLAC"))
    api = Client("http://testserver", max_retries=0)
    api._http.close()
    api._http = client  # Starlette's TestClient is an httpx.Client over the app
    lines = list(api.timeline(path, tier="batch", vad="energy"))
    assert len(lines) == 4 and lines[-1]["summary"]["segments"] == 3 and lines[0]["tier"] == "batch"
    with pytest.raises(ApiError) as err:
        list(api.timeline(encode(CALL), budget_ms=1, vad="energy", content_type="audio/wav"))
    assert (err.value.status, err.value.code) == (200, "overloaded")
    with pytest.raises(ApiError) as err:
        list(api.timeline(b"garbage", vad="energy", content_type="audio/wav"))
    assert (err.value.status, err.value.code) == (400, "invalid_audio")
