"""Serving benchmarks: the SLA router over real HTTP, measured side by side in one run.

The server is a real Serve app on a local Ray cluster (proxy, router and exit replicas in
Ray's worker processes); the load generator is this driver process (asyncio + httpx),
outside the server. Sections:

  overhead  HTTP through proxy + router to exit_<deepest>, against the same predictor
            called in-process on the same clip (interleaved rounds)
  tiers     per tier: p50/p95/p99 client latency, throughput, exits used, budgets met,
            under a fixed concurrency (closed loop)
  batching  throughput at 16 concurrent clients, @serve.batch max_batch_size 8 vs 1
  cascade   tier auto against always-deep on the held-out clips (UAR, mean latency), and
            what resuming from the shallow block output saves against recomputing
            (in-process, the demo model and a wav2vec2-base shape)
  sla       share of requests meeting their budget at an offered load (open loop) the
            deepest exit alone cannot sustain: SLA router vs always-deep, wav2vec2-base
            shape (random init), budget 1 s

    make demo   # runs/demo/checkpoint + runs/demo/data
    .venv/bin/python bench/serve_bench.py --out runs/bench/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import torch
from emodistill.evaluate.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "serve_configs" / "local.yaml"


def wav_bytes(wave: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, 16000, format="WAV")
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def _post(client: httpx.AsyncClient, url: str, data: bytes, headers: dict) -> tuple[float, int, dict]:
    start = time.perf_counter()
    r = await client.post(f"{url}/v1/predict", content=data, headers={"Content-Type": "audio/wav", **headers})
    ms = (time.perf_counter() - start) * 1000.0
    return ms, r.status_code, (r.json() if r.status_code == 200 else {})


async def closed_loop(url: str, clips: list[bytes], headers: dict, concurrency: int, requests: int) -> dict:
    """``concurrency`` clients, each sending its next request when the last is answered."""
    results: list[tuple[float, int, dict]] = []
    counter = iter(range(requests))
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker():
            for i in counter:
                results.append(await _post(client, url, clips[i % len(clips)], headers))

        start = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - start
    return summarise(results, wall)


async def open_loop(
    url: str, clips: list[bytes], headers: dict, rate: float, seconds: float, budget_ms: float, seed: int = 0
) -> dict:
    """Poisson arrivals at ``rate`` per second for ``seconds``, whatever the server does."""
    rng = np.random.default_rng(seed)
    results: list[tuple[float, int, dict]] = []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=256)) as client:
        tasks, start, t, i = [], time.perf_counter(), 0.0, 0
        while t < seconds:
            await asyncio.sleep(max(0.0, start + t - time.perf_counter()))
            tasks.append(asyncio.create_task(_post(client, url, clips[i % len(clips)], headers)))
            t += float(rng.exponential(1.0 / rate))
            i += 1
        results = list(await asyncio.gather(*tasks))
        wall = time.perf_counter() - start
    return summarise(results, wall, budget_ms)


def summarise(results: list[tuple[float, int, dict]], wall: float, budget_ms: float | None = None) -> dict:
    """Latency percentiles are of answered requests; ``within_budget`` is the share of all
    requests answered within ``budget_ms`` (default: each answer's own budget) as the
    client saw it (proxy and network included)."""
    ok = [(ms, body) for ms, code, body in results if code == 200]
    lat = [ms for ms, _ in ok] or [float("nan")]
    exits: dict[str, int] = {}
    for _, body in ok:
        exits[body["exit"]] = exits.get(body["exit"], 0) + 1
    return {
        "requests": len(results),
        "ok": len(ok),
        "rejected": len(results) - len(ok),
        "p50_ms": pct(lat, 0.5),
        "p95_ms": pct(lat, 0.95),
        "p99_ms": pct(lat, 0.99),
        "throughput_rps": len(ok) / wall,
        "exits": dict(sorted(exits.items(), key=lambda kv: int(kv[0][5:]))),
        "degraded": sum(body["degraded"] for _, body in ok) / max(len(ok), 1),
        # the budget is the server's; the client's time adds the proxy and the network
        "met_budget_server": sum(body["latency_ms"] <= body["budget_ms"] for _, body in ok) / max(len(ok), 1),
        "within_budget": sum(ms <= (budget_ms or body["budget_ms"]) for ms, body in ok) / max(len(results), 1),
    }


def deploy(checkpoint: str, overrides: list[str] | None = None) -> str:
    from emodistill.serve.local import start_from_config
    from ray import serve

    serve.shutdown()
    return start_from_config(LOCAL, [f"checkpoint={checkpoint}", *(overrides or [])])


def warm(url: str, clips: list[bytes]) -> None:
    for tier in ["batch", "realtime", "interactive"] * 3:
        httpx.post(f"{url}/v1/predict", content=clips[0], headers={"Content-Type": "audio/wav", "X-Latency-Tier": tier}, timeout=60)
    time.sleep(1.5)


# ---- sections ---------------------------------------------------------------------------
def section_overhead(checkpoint: str, clip: np.ndarray, rounds: int) -> dict:
    from emodistill.checkpoint import read_checkpoint_config
    from emodistill.serve.predictor import ExitPredictor

    deepest = list(read_checkpoint_config(checkpoint).model.heads)[-1]
    torch.set_num_threads(1)
    predictor = ExitPredictor(checkpoint, deepest)
    predictor.warmup()
    url = deploy(checkpoint)
    data = wav_bytes(clip)
    warm(url, [data])
    http_ms, local_ms, router_ms = [], [], []
    with httpx.Client(timeout=60) as client:
        for _ in range(rounds):
            t = time.perf_counter()
            predictor.predict([clip])
            local_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            r = client.post(f"{url}/v1/predict", content=data, headers={"Content-Type": "audio/wav", "X-Latency-Tier": "batch"})
            http_ms.append((time.perf_counter() - t) * 1000)
            body = r.json()
            assert body["exit"] == deepest, body
            router_ms.append(body["latency_ms"])
    return {
        "exit": deepest,
        "clip_seconds": len(clip) / 16000,
        "in_process_p50_ms": statistics.median(local_ms),
        "router_p50_ms": statistics.median(router_ms),
        "http_p50_ms": statistics.median(http_ms),
        "http_p95_ms": pct(http_ms, 0.95),
        "ratio_http_vs_in_process": statistics.median(http_ms) / statistics.median(local_ms),
    }


def section_tiers(checkpoint: str, clips: list[bytes], concurrency: int, requests: int) -> dict:
    url = deploy(checkpoint)
    warm(url, clips)
    out = {}
    for tier in ["realtime", "interactive", "batch", "auto"]:
        out[tier] = asyncio.run(closed_loop(url, clips, {"X-Latency-Tier": tier}, concurrency, requests))
    return out


def section_batching(checkpoint: str, clips: list[bytes], requests: int) -> dict:
    out = {}
    for label, size in (("batching on (max_batch_size 8)", 8), ("batching off (max_batch_size 1)", 1)):
        url = deploy(checkpoint, [f"deployment.max_batch_size={size}", "deployment.batch_wait_timeout_s=0.005"])
        warm(url, clips)
        out[label] = asyncio.run(closed_loop(url, clips, {"X-Latency-Tier": "batch"}, 16, requests))
    return out


def section_cascade(checkpoint: str, dataset: str, folds: list[int], threshold: float) -> dict:
    from emodistill.data.rows import load_arrays
    from emodistill.data.schema import read_info
    from emodistill.evaluate.metrics import classification_metrics

    labels = read_info(dataset).labels
    arrays = load_arrays(dataset, folds=folds)
    clips = [wav_bytes(w) for w in arrays["waveform"]]
    truth = np.asarray(arrays["label_id"])
    url = deploy(checkpoint, [f"cascade.threshold={threshold}", "cascade.budget_ms=2000"])
    warm(url, clips)
    out = {}
    for tier in ["batch", "auto"]:
        preds, lat, blocks = [], [], []
        with httpx.Client(timeout=60) as client:
            for data in clips:
                t = time.perf_counter()
                body = client.post(f"{url}/v1/predict", content=data, headers={"Content-Type": "audio/wav", "X-Latency-Tier": tier}).json()
                lat.append((time.perf_counter() - t) * 1000)
                preds.append(labels.index(body["label"]))
                blocks.append(body["block"])
        m = classification_metrics(truth, np.asarray(preds), len(labels))
        out["always deep (batch)" if tier == "batch" else f"cascade (auto, margin >= {threshold})"] = {
            "uar": m["uar"], "mean_ms": statistics.fmean(lat), "p95_ms": pct(lat, 0.95), "mean_block": statistics.fmean(blocks),
        }
    return out


def reuse_savings(model, exits: list[str], seconds: float, repeats: int) -> dict:
    """The full cascade walk over ``exits`` on one clip: resume each deeper exit from the
    previous block output, against running each cut model from the waveform."""
    from emodistill.evaluate.latency import time_interleaved

    torch.set_num_threads(1)
    cuts = {n: model.cut(n).eval() for n in exits}
    clip = torch.randn(1, int(seconds * 16000), generator=torch.Generator().manual_seed(0))

    @torch.inference_mode()
    def reuse():
        out = cuts[exits[0]](clip)
        hidden, block = out.hidden[exits[0]], int(exits[0][5:])
        for n in exits[1:]:
            out = cuts[n].resume(hidden, block)
            hidden, block = out.hidden[n], int(n[5:])

    @torch.inference_mode()
    def recompute():
        for n in exits:
            cuts[n](clip)

    stats = time_interleaved({"reuse": reuse, "recompute": recompute}, warmup=2, repeats=repeats)
    r, c = stats["reuse"]["latency_ms_p50"], stats["recompute"]["latency_ms_p50"]
    return {"exits": exits, "clip_seconds": seconds, "reuse_p50_ms": r, "recompute_p50_ms": c, "saved": 1 - r / c}


def section_sla(dataset: str, rate: float, seconds: float, budget_ms: int, workdir: Path) -> dict:
    """A wav2vec2-base-shaped model (random init, exits 1, 4, 8 + 12): the deep exit is
    the bottleneck here, unlike the demo's tiny model where HTTP dominates."""
    from emodistill.checkpoint import save_checkpoint
    from emodistill.data.schema import read_info
    from emodistill.evaluate.report import EvaluateConfig, evaluate
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    labels = read_info(dataset).labels
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=BackboneConfig(arch="base"), exits=[1, 4, 8], student_head="mean"), labels)
    ckpt = workdir / "base" / "checkpoint"
    save_checkpoint(model, ckpt, metadata={"val_folds": [3]})
    torch.set_num_threads(1)
    evaluate(EvaluateConfig(checkpoint=str(ckpt), dataset=dataset, folds=[3], repeats=3, latency_seconds=[1.0, 2.0]))
    clip = wav_bytes(np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32))
    common = ["deployment.num_cpus=0.25", "deployment.torch_threads=1", "router.max_ongoing_requests=256",
              "router.max_queued_requests=-1"]
    runs = (
        # only exit_12 deployed: every request waits for the deep model, however long
        ("always deep (only exit_12 deployed)", ["exits=[exit_12]", *common], "600000"),
        (f"SLA router, all exits (budget {budget_ms} ms)", common, str(budget_ms)),
    )
    out = {}
    for name, overrides, budget in runs:
        url = deploy(str(ckpt), overrides)
        warm(url, [clip])
        out[name] = asyncio.run(open_loop(url, [clip], {"X-Latency-Budget-Ms": budget}, rate, seconds, budget_ms))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "runs/demo/checkpoint"))
    parser.add_argument("--dataset", default=str(ROOT / "runs/demo/data"))
    parser.add_argument("--folds", default="3", help="held-out folds of the demo (the checkpoint's val folds)")
    parser.add_argument("--sections", default="overhead,tiers,batching,cascade,sla")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--sla-rate", type=float, default=6.0, help="offered requests per second (open loop)")
    parser.add_argument("--sla-seconds", type=float, default=20.0)
    parser.add_argument("--sla-budget-ms", type=int, default=1000)
    parser.add_argument("--out", help="write every figure as JSON here")
    opts = parser.parse_args()

    from emodistill.cluster import init_ray
    from ray import serve

    init_ray(quiet=True)
    sections = set(opts.sections.split(","))
    folds = [int(f) for f in opts.folds.split(",")]
    rng = np.random.default_rng(0)
    clips = [wav_bytes(rng.normal(0, 0.1, int(s * 16000)).astype(np.float32)) for s in (1.0, 2.0, 3.0)]
    results: dict = {}
    try:
        if "overhead" in sections:
            r = results["overhead"] = section_overhead(opts.checkpoint, rng.normal(0, 0.1, 48000).astype(np.float32), 60)
            print(f"\n## Router overhead ({r['exit']}, {r['clip_seconds']:g} s clip, 60 interleaved rounds)\n")
            print(markdown_table(["path", "p50 ms"], [
                ["predictor in-process", r["in_process_p50_ms"]],
                ["router's own latency_ms (decode + policy + exit call)", r["router_p50_ms"]],
                ["HTTP client -> proxy -> router -> exit", r["http_p50_ms"]],
            ]))
            print(f"\nHTTP / in-process: {r['ratio_http_vs_in_process']:.2f}x")
        if "tiers" in sections:
            r = results["tiers"] = section_tiers(opts.checkpoint, clips, opts.concurrency, opts.requests)
            print(f"\n## Per tier ({opts.concurrency} concurrent clients, {opts.requests} requests each, 1-3 s clips)\n")
            print(markdown_table(
                ["tier", "p50 ms", "p95 ms", "p99 ms", "req/s", "exits", "degraded", "met budget: server", "client"],
                [[t, v["p50_ms"], v["p95_ms"], v["p99_ms"], v["throughput_rps"], v["exits"], f"{v['degraded']:.0%}",
                  f"{v['met_budget_server']:.0%}", f"{v['within_budget']:.0%}"]
                 for t, v in r.items()],
            ))
        if "batching" in sections:
            r = results["batching"] = section_batching(opts.checkpoint, clips, opts.requests)
            print(f"\n## Dynamic batching (16 concurrent clients, tier batch, {opts.requests} requests)\n")
            print(markdown_table(["setting", "req/s", "p50 ms", "p95 ms"],
                                 [[k, v["throughput_rps"], v["p50_ms"], v["p95_ms"]] for k, v in r.items()]))
            on, off = (v["throughput_rps"] for v in r.values())
            print(f"\nthroughput on / off: {on / off:.2f}x")
        if "cascade" in sections:
            r = results["cascade"] = section_cascade(opts.checkpoint, opts.dataset, folds, opts.threshold)
            print("\n## Cascade (tier auto) against always-deep, held-out clips over HTTP\n")
            print(markdown_table(["policy", "UAR", "mean ms", "p95 ms", "mean block"],
                                 [[k, v["uar"], v["mean_ms"], v["p95_ms"], v["mean_block"]] for k, v in r.items()]))
            from emodistill.checkpoint import load_checkpoint
            from emodistill.model import BackboneConfig, ModelConfig, build_model

            demo = load_checkpoint(opts.checkpoint).model
            torch.manual_seed(0)
            base = build_model(ModelConfig(backbone=BackboneConfig(arch="base"), exits=[3, 6, 9], student_head="gru"), ["a", "b", "c", "d"]).eval()
            saves = results["cascade_reuse"] = [
                {"model": "demo (tiny)", **reuse_savings(demo, demo.exit_names, 3.0, 30)},
                {"model": "wav2vec2-base shape", **reuse_savings(base, base.exit_names, 3.0, 8)},
            ]
            print("\nFull cascade walk on one 3 s clip, in-process, 1 thread: resume from the block output vs recompute\n")
            print(markdown_table(["model", "exits", "resume p50 ms", "recompute p50 ms", "saved"],
                                 [[s["model"], ",".join(s["exits"]), s["reuse_p50_ms"], s["recompute_p50_ms"], f"{s['saved']:.0%}"] for s in saves]))
        if "sla" in sections:
            with tempfile.TemporaryDirectory() as tmp:
                r = results["sla"] = section_sla(opts.dataset, opts.sla_rate, opts.sla_seconds, opts.sla_budget_ms, Path(tmp))
            budget = opts.sla_budget_ms
            print(f"\n## SLA compliance: {opts.sla_rate:g} req/s offered (Poisson, {opts.sla_seconds:g} s), "
                  f"1 s clips, wav2vec2-base shape, one replica per exit\n")
            print(markdown_table(["policy", "answered", "p50 ms", "p95 ms", "p99 ms", "req/s", "exits", f"within {budget} ms"],
                                 [[k, f"{v['ok']}/{v['requests']}", v["p50_ms"], v["p95_ms"], v["p99_ms"], v["throughput_rps"], v["exits"], f"{v['within_budget']:.0%}"]
                                  for k, v in r.items()]))
    finally:
        serve.shutdown()
    if opts.out:
        Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
