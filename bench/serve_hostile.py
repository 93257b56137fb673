"""Hostile input against the real Serve app: what each class of bad request gets, how
fast, what it costs the router replica's memory, and what it does to normal requests
sent meanwhile.

The server is the demo-shaped app (`serve_configs/local.yaml`: router + exit_1..exit_4
of a tiny random-init checkpoint, one replica each) on a local Ray cluster; the clients
run in this driver process. For each class, for a window of a few seconds:

  normal load  open-loop Poisson arrivals of 1 s WAV clips (tier batch), client clock
  hostile      the class' request sent back to back (or 40 at once for the bombs)
  memory       private memory (RssAnon) of the router replica process, sampled every
               10 ms: the peak growth over the value before the window, and what is
               still held after it

The first row is the normal load alone: the floor the other rows' p99 compare to. A
second table times the decode path on normal clips against plain soundfile + soxr.

    .venv/bin/python bench/serve_hostile.py --out runs/bench/serve_hostile.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from emodistill.evaluate.tables import markdown_table
from emodistill.serve import hostile

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "serve_configs" / "local.yaml"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def wav_bytes(wave: np.ndarray, rate: int = 16000, format: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=format)
    return buf.getvalue()


# ---- the server ---------------------------------------------------------------------------


def build_checkpoint(workdir: Path) -> str:
    """The demo's model shape (tiny wav2vec2, exits 1-3 + the teacher at 4, mean heads),
    random init, with the exit_profile.json `emodistill evaluate` writes: no training."""
    import torch
    from emodistill.checkpoint import save_checkpoint
    from emodistill.data.ingest import IngestConfig, ingest
    from emodistill.data.schema import read_info
    from emodistill.data.synth import SynthConfig, synthesize
    from emodistill.evaluate.report import EvaluateConfig, evaluate
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    synthesize(workdir / "corpus", SynthConfig(speakers=4, utterances=2))
    ingest(IngestConfig(source=str(workdir / "corpus"), dest=str(workdir / "data"), folds=2, workers=1), progress=False)
    torch.manual_seed(0)
    labels = read_info(str(workdir / "data")).labels
    model = build_model(ModelConfig(backbone=BackboneConfig(arch="tiny"), exits=[1, 2, 3], student_head="mean"), labels)
    ckpt = workdir / "checkpoint"
    save_checkpoint(model, ckpt, metadata={"train_folds": [0], "val_folds": [1]})
    evaluate(EvaluateConfig(checkpoint=str(ckpt), dataset=str(workdir / "data"), repeats=5, latency_seconds=[1.0, 3.0]))
    return str(ckpt)


def router_pid() -> int:
    import ray

    (name,) = [a for a in ray.util.list_named_actors(all_namespaces=True)
               if a["name"].startswith("SERVE_REPLICA::") and "#router#" in a["name"]]
    actor = ray.get_actor(name["name"], namespace=name["namespace"])
    return ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()))


class MemorySampler:
    """The router replica's private memory (RssAnon: heap and anonymous maps, not the
    shared object-store pages Ray maps in) every 10 ms on a thread: before, peak, after."""

    def __init__(self, pid: int):
        self.path = f"/proc/{pid}/status"
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss_anon(self) -> int:
        with open(self.path) as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"no RssAnon in {self.path}")

    def __enter__(self):
        self.before = self.rss_anon()
        self.peak = self.before
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss_anon())
            time.sleep(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.after = self.rss_anon()
        self.peak = max(self.peak, self.after)


# ---- the classes ----------------------------------------------------------------------------


def classes(url: str, port: int, payloads: dict) -> dict:
    """name -> (how many at once, an async function sending one: (status, code))."""

    async def post(client: httpx.AsyncClient, data, media="audio/wav", path="/v1/predict", method="POST"):
        r = await client.request(method, f"{url}{path}", content=data, headers={"content-type": media})
        code = r.json().get("error", {}).get("code", "") if r.headers.get("content-type") == "application/json" else "(not JSON)"
        return r.status_code, code

    async def raw(then: str):
        answer = await asyncio.to_thread(
            hostile.raw_post, "127.0.0.1", port, "/v1/predict", payloads["wav"], None, 1000, then, None, 60.0
        )
        code = ""
        if answer.status is not None:
            try:
                code = json.loads(answer.body)["error"]["code"]
            except (ValueError, KeyError):
                code = "(not JSON)"
        return answer.status or "closed", code or ("no answer" if answer.status is None else "")

    async def chunked(data: bytes):  # no Content-Length: the limit must be found while reading
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]

    flood_type, flood = payloads["flood"]
    return {
        "lying FLAC header (165 KB, 655,350 Hz x 8 ch, 29 s)": (1, lambda c: post(c, payloads["lying"], "audio/flac")),
        "WAV at 1 Hz (104 B -> 30 s at 16 kHz)": (1, lambda c: post(c, payloads["1hz"])),
        "FLAC of undeclared length (96 kHz x 8 ch, 60 s; decoded to the cap)": (
            1, lambda c: post(c, payloads["undeclared"], "audio/flac")),
        "huge samples (float WAV, peak 1e35)": (1, lambda c: post(c, payloads["huge"])),
        "NaN samples (float WAV)": (1, lambda c: post(c, payloads["nan"])),
        "multipart flood (4 MiB of tiny parts)": (1, lambda c: post(c, flood, flood_type)),
        "slow upload (1000 B, then stalls)": (1, lambda c: raw("wait")),
        "truncated upload (1000 B of 32 KB, then closes)": (1, lambda c: raw("close")),
        "oversized body (17 MiB, Content-Length)": (1, lambda c: post(c, payloads["big"])),
        "oversized body (17 MiB, chunked)": (1, lambda c: post(c, chunked(payloads["big"]))),
        "unknown route (GET /v1/nothing)": (1, lambda c: post(c, None, path="/v1/nothing", method="GET")),
        "wrong method (PUT /v1/predict)": (1, lambda c: post(c, b"x", method="PUT")),
        "40 concurrent lying FLACs": (40, lambda c: post(c, payloads["lying"], "audio/flac")),
        "40 concurrent FLACs of undeclared length": (40, lambda c: post(c, payloads["undeclared"], "audio/flac")),
    }


async def window(url: str, send, at_once: int, rate: float, seconds: float, clip: bytes, seed: int) -> dict:
    """``seconds`` of normal open-loop load at ``rate``/s while ``send`` runs back to back
    (``at_once`` copies concurrently, once, when > 1)."""
    rng = np.random.default_rng(seed)
    normal: list[tuple[float, int]] = []
    bad: list[tuple[float, object, str]] = []
    limits = httpx.Limits(max_connections=128)
    async with httpx.AsyncClient(timeout=120, limits=limits) as nclient, httpx.AsyncClient(timeout=120, limits=limits) as hclient:

        async def one_normal():
            t = time.perf_counter()
            try:
                r = await nclient.post(f"{url}/v1/predict", content=clip,
                                       headers={"content-type": "audio/wav", "x-latency-tier": "batch"})
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            normal.append(((time.perf_counter() - t) * 1000.0, status))

        async def one_bad():
            t = time.perf_counter()
            try:
                status, code = await send(hclient)
            except (httpx.HTTPError, OSError) as err:
                status, code = "error", type(err).__name__
            bad.append(((time.perf_counter() - t) * 1000.0, status, code))

        async def hostile_loop():
            if send is None:
                return
            if at_once > 1:
                await asyncio.sleep(0.5)
                await asyncio.gather(*[one_bad() for _ in range(at_once)])
                return
            end = time.perf_counter() + seconds
            while time.perf_counter() < end or not bad:
                await one_bad()

        start = time.perf_counter()
        hostile_task = asyncio.create_task(hostile_loop())
        tasks, t = [], 0.0
        while t < seconds or not hostile_task.done():  # keep normal load on until the hostile work ends
            await asyncio.sleep(max(0.0, start + t - time.perf_counter()))
            tasks.append(asyncio.create_task(one_normal()))
            t += float(rng.exponential(1.0 / rate))
        await hostile_task
        await asyncio.gather(*tasks)
    ok = [ms for ms, status in normal if status == 200]
    return {
        "hostile_requests": len(bad),
        "hostile_status": _counts(f"{s} {c}".strip() for _, s, c in bad),
        "hostile_p50_ms": pct([ms for ms, _, _ in bad], 0.5),
        "hostile_max_ms": max([ms for ms, _, _ in bad], default=float("nan")),
        "normal_requests": len(normal),
        "normal_failed": len(normal) - len(ok),
        "normal_p50_ms": pct(ok, 0.5),
        "normal_p99_ms": pct(ok, 0.99),
    }


def _counts(labels) -> list[str]:
    """["422 audio_too_large x5", ...] (the count only when a window saw several kinds)."""
    seen: dict[str, int] = {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
    if len(seen) == 1:
        return list(seen)
    return [f"{k} x{v}" for k, v in sorted(seen.items(), key=lambda kv: -kv[1])]


def decode_floor(repeats: int) -> list[dict]:
    """The decode path on normal clips against plain soundfile + soxr (no limits)."""
    import soxr
    from emodistill.data.audio import AudioLimits, decode_clip

    rng = np.random.default_rng(0)
    clips = {
        "1 s WAV, 16 kHz mono": wav_bytes(rng.normal(0, 0.1, 16000).astype(np.float32)),
        "3 s FLAC, 44.1 kHz stereo": wav_bytes(rng.normal(0, 0.1, (3 * 44100, 2)).astype(np.float32), 44100, format="FLAC"),
        "30 s WAV, 48 kHz stereo": wav_bytes(rng.normal(0, 0.1, (30 * 48000, 2)).astype(np.float32), 48000),
    }
    limits = AudioLimits(min_seconds=0.1, silence_peak=0.0)

    def plain(data):
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        mono = wave.mean(axis=1)
        return soxr.resample(mono, rate, 16000, quality="HQ") if rate != 16000 else mono

    rows = []
    for name, data in clips.items():
        times = {"plain": [], "ours": []}
        plain(data), decode_clip(data, limits)  # warm both
        for _ in range(repeats):  # interleaved
            for key, fn in (("plain", plain), ("ours", lambda d: decode_clip(d, limits))):
                t = time.perf_counter()
                fn(data)
                times[key].append((time.perf_counter() - t) * 1000.0)
        p, o = statistics.median(times["plain"]), statistics.median(times["ours"])
        rows.append({"clip": name, "plain_p50_ms": p, "ours_p50_ms": o, "ratio": o / p})
    return rows


def _ms(value: float) -> object:
    return "-" if value != value else value  # nan: no hostile request in the window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a checkpoint with report/exit_profile.json beside it (default: build the demo shape)")
    parser.add_argument("--rate", type=float, default=20.0, help="normal requests per second (open loop)")
    parser.add_argument("--seconds", type=float, default=3.0, help="window per class")
    parser.add_argument("--decode-repeats", type=int, default=30)
    parser.add_argument("--out", help="write every figure as JSON here")
    opts = parser.parse_args()

    import ray
    from emodistill.serve.local import start_from_config
    from ray import serve

    rng = np.random.default_rng(0)
    clip = wav_bytes(rng.normal(0, 0.1, 16000).astype(np.float32))
    results: dict = {"decode": decode_floor(opts.decode_repeats)}
    print(f"\n## Decode path on normal clips against plain soundfile + soxr ({opts.decode_repeats} interleaved rounds)\n")
    print(markdown_table(["clip", "plain p50 ms", "ours p50 ms", "ours / plain"],
                         [[r["clip"], r["plain_p50_ms"], r["ours_p50_ms"], f"{r['ratio']:.2f}x"] for r in results["decode"]]))

    payloads = {
        "wav": wav_bytes(rng.normal(0, 0.1, 16000).astype(np.float32)),
        "lying": hostile.lying_flac(real_seconds=29.0),  # the file, ~165 KB
        "1hz": hostile.wav_at(1),
        "undeclared": hostile.unknown_length_flac(seconds=60.0, rate=96000, channels=8),
        "huge": hostile.float_wav(1e35),
        "nan": hostile.float_wav(float("nan")),
        "flood": hostile.multipart_flood(4 << 20),
        "big": b"\0" * (17 << 20),
    }
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = opts.checkpoint or build_checkpoint(Path(tmp))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            url = start_from_config(LOCAL, [f"checkpoint={checkpoint}"], port=port)
            for _ in range(20):  # warm every path
                httpx.post(f"{url}/v1/predict", content=clip, headers={"content-type": "audio/wav", "x-latency-tier": "batch"}, timeout=60)
            sampler = MemorySampler(router_pid())
            table = {"none (normal load alone)": (1, None), **classes(url, port, payloads)}
            rows = {}
            for i, (name, (at_once, send)) in enumerate(table.items()):
                with sampler:
                    row = asyncio.run(window(url, send, at_once, opts.rate, opts.seconds, clip, seed=i))
                row["router_anon_before_mib"] = sampler.before / 2**20
                row["router_anon_peak_growth_mib"] = (sampler.peak - sampler.before) / 2**20
                row["router_anon_held_after_mib"] = (sampler.after - sampler.before) / 2**20
                rows[name] = row
                print(f"  {name}: {', '.join(row['hostile_status']) or '-'}", flush=True)
                time.sleep(0.5)
            results["hostile"] = rows
        finally:
            serve.shutdown()
            ray.shutdown()

    print(f"\n## Hostile input (demo-shaped app; normal load {opts.rate:g} req/s open loop, 1 s clips, tier batch; "
          f"{opts.seconds:g} s per class)\n")
    print(markdown_table(
        ["class", "sent", "status", "answer p50 ms", "answer max ms", "router memory peak +MiB", "held after +MiB",
         "normal p50 ms", "normal p99 ms", "normal failed"],
        [[k, v["hostile_requests"], ", ".join(v["hostile_status"]) or "-", _ms(v["hostile_p50_ms"]), _ms(v["hostile_max_ms"]),
          v["router_anon_peak_growth_mib"], v["router_anon_held_after_mib"], v["normal_p50_ms"], v["normal_p99_ms"],
          f"{v['normal_failed']}/{v['normal_requests']}"] for k, v in results["hostile"].items()],
    ))
    if opts.out:
        Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
