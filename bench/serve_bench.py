"""Serving benchmarks: the SLA router over real HTTP, each figure a ratio measured side by
side in one run.

The server is a real Serve app on a local Ray cluster (proxy, router and exit replicas in
Ray's worker processes); the load generator is this driver process (asyncio + httpx),
outside the server. Every request carries ``X-Request-Start`` (the client's send time),
as a load balancer would set it, and every latency is the client's clock.

Sections (``--sections``, comma-separated):

  floor     a plain two-hop Serve app (FastAPI ingress -> a deployment returning a
            constant, same resources) against the router path (-> the deepest demo exit)
            and the same exit's predictor in-process, one 3 s clip, interleaved rounds.
            Goal: router p50 <= floor p50 + in-process p50 + 3 ms.
  tiers     every tier of serve_configs/local.yaml at 4 concurrent clients (closed loop,
            1-3 s clips): share of requests answered within the tier's budget.
  overload  a wav2vec2-base-shaped checkpoint (random init, mean heads, exits 1, 4, 8 +
            12), 1 s clips, Poisson arrivals at 1.5x and 3x what exit_12 alone sustains
            (measured first, in the same run, as is exit_1's capacity), budget from the
            profile: answered within budget, refused (and how fast), late, percentiles.
  batching  the base shape's exit_4 alone, 16 clients, clips of 1-30 s (half of them 1 s:
            the realtime stream): throughput and the 1 s clips' p95 for length-aware
            batching, count batching and none.
  cascade   (not in the default set) tier auto against always-deep on the demo's held-out
            clips, and what resuming from the shallow block output saves.

    make demo   # runs/demo/checkpoint + runs/demo/data
    .venv/bin/python bench/serve_bench.py --out runs/bench/serve.json
    .venv/bin/python bench/serve_bench.py --sections overload,batching --out runs/bench/serve-base.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import torch
from emodistill.evaluate.tables import markdown_table
from fastapi import FastAPI, Request

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "serve_configs" / "local.yaml"
NEVER = "600000"  # a budget no answer misses: throughput and capacity runs


def wav_bytes(wave: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, 16000, format="WAV")
    return buf.getvalue()


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * 16000)).astype(np.float32)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# ---- the load generator -------------------------------------------------------------------
@dataclass
class Result:
    ms: float  # client clock: send -> answer
    status: int
    body: dict
    seconds: float  # clip length
    plain_text: bool = False  # a refusal that is not our JSON (Serve's own queue)


async def post(client: httpx.AsyncClient, url: str, data: bytes, seconds: float, headers: dict) -> Result:
    start = time.perf_counter()
    h = {"Content-Type": "audio/wav", "X-Request-Start": f"t={time.time():.6f}", **headers}
    try:
        r = await client.post(f"{url}/v1/predict", content=data, headers=h)
    except httpx.HTTPError as err:
        return Result((time.perf_counter() - start) * 1000.0, 0, {"error": str(err)}, seconds, True)
    ms = (time.perf_counter() - start) * 1000.0
    try:
        body = r.json()
        plain = False
    except ValueError:
        body, plain = {}, True
    return Result(ms, r.status_code, body, seconds, plain)


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    wall_s: float = 0.0


async def closed_loop(url: str, clips: list[tuple[bytes, float]], headers: dict, concurrency: int,
                      requests: int | None = None, seconds: float | None = None) -> Run:
    """``concurrency`` clients, each sending its next request when the last is answered,
    for ``requests`` requests or ``seconds`` seconds."""
    run = Run()
    counter = iter(range(requests if requests is not None else 10**9))
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency)) as client:
        start = time.perf_counter()

        async def worker():
            for i in counter:
                if seconds is not None and time.perf_counter() - start > seconds:
                    return
                data, length = clips[i % len(clips)]
                run.results.append(await post(client, url, data, length, headers))

        await asyncio.gather(*[worker() for _ in range(concurrency)])
        run.wall_s = time.perf_counter() - start
    return run


async def open_loop(url: str, clip: tuple[bytes, float], headers: dict, rate: float, seconds: float, seed: int = 0) -> Run:
    """Poisson arrivals at ``rate`` per second for ``seconds``, whatever the server does."""
    rng = np.random.default_rng(seed)
    run = Run()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=1024)) as client:
        tasks, start, t = [], time.perf_counter(), 0.0
        while t < seconds:
            await asyncio.sleep(max(0.0, start + t - time.perf_counter()))
            tasks.append(asyncio.create_task(post(client, url, clip[0], clip[1], headers)))
            t += float(rng.exponential(1.0 / rate))
        run.results = list(await asyncio.gather(*tasks))
        run.wall_s = time.perf_counter() - start
    return run


def summarise(run: Run, budget_ms: float | None = None) -> dict:
    """Percentiles of answered requests; ``within_budget``: share of *all* requests answered
    within ``budget_ms`` (default: each answer's own budget) by the client's clock."""
    ok = [r for r in run.results if r.status == 200]
    refused = [r for r in run.results if r.status != 200]
    lat = [r.ms for r in ok]
    exits: dict[str, int] = {}
    for r in ok:
        exits[r.body["exit"]] = exits.get(r.body["exit"], 0) + 1

    def budget(r: Result) -> float:
        return budget_ms if budget_ms is not None else r.body["budget_ms"]

    codes: dict[str, int] = {}
    for r in refused:
        code = "plain-text" if r.plain_text else r.body.get("error", {}).get("code", str(r.status))
        codes[code] = codes.get(code, 0) + 1
    n = max(len(run.results), 1)
    return {
        "offered": len(run.results),
        "answered": len(ok),
        "refused": len(refused),
        "refusal_codes": codes,
        "refusal_p50_ms": pct([r.ms for r in refused], 0.5),
        "refusal_p99_ms": pct([r.ms for r in refused], 0.99),
        "p50_ms": pct(lat, 0.5),
        "p95_ms": pct(lat, 0.95),
        "p99_ms": pct(lat, 0.99),
        "answered_rps": len(ok) / run.wall_s if run.wall_s else float("nan"),
        "exits": dict(sorted(exits.items(), key=lambda kv: int(kv[0][5:]))),
        "degraded": sum(bool(r.body.get("degraded")) for r in ok),
        "late_flagged": sum(bool(r.body.get("late")) for r in ok),  # the router's own clock
        "late_client": sum(r.ms > budget(r) for r in ok),  # the client's clock
        "within_budget": sum(r.ms <= budget(r) for r in ok) / n,
        "answered_within_budget": sum(r.ms <= budget(r) for r in ok) / max(len(ok), 1),
    }


# ---- servers ------------------------------------------------------------------------------
def deploy(checkpoint: str, overrides: list[str] | None = None) -> str:
    from emodistill.serve.local import start_from_config
    from ray import serve

    serve.shutdown()
    return start_from_config(LOCAL, [f"checkpoint={checkpoint}", *(overrides or [])])


def warm(url: str, clips: list[bytes], rounds: int = 3, headers: list[dict] | None = None) -> None:
    """A few answers per exit, so replicas and the router's estimates are warm."""
    headers = headers or [{"X-Latency-Tier": t} for t in ("batch", "realtime", "interactive")]
    with httpx.Client(timeout=120) as client:
        for _ in range(rounds):
            for h in headers:
                for data in clips:
                    client.post(f"{url}/v1/predict", content=data, headers={"Content-Type": "audio/wav", **h})
    time.sleep(1.0)


def deploy_floor(url_prefix: str = "/floor") -> str:
    """The plain two-hop Serve app: FastAPI ingress reading the body -> a deployment
    returning a constant; the same resources as router and exit in local.yaml."""
    from ray import serve

    api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=16)
    class Constant:
        def predict(self, n: int) -> dict:
            return {"label": "neutral", "bytes": n}

    @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
    @serve.ingress(api)
    class Ingress:
        def __init__(self, constant):
            self.constant = constant

        async def predict(self, request: Request) -> dict:
            return await self.constant.predict.remote(len(await request.body()))

        # real annotations, not strings (this module has postponed annotations): the replica
        # rebuilds the route from the pickled class
        predict.__annotations__ = {"request": Request, "return": dict}
        predict = api.post("/v1/predict")(predict)

    serve.run(Ingress.bind(Constant.bind()), name="floor", route_prefix=url_prefix)
    return url_prefix


# ---- sections -----------------------------------------------------------------------------
def section_floor(checkpoint: str, rounds: int) -> dict:
    from emodistill.checkpoint import read_checkpoint_config
    from emodistill.serve.predictor import ExitPredictor

    deepest = list(read_checkpoint_config(checkpoint).model.heads)[-1]
    clip = noise(3.0)
    data = wav_bytes(clip)
    torch.set_num_threads(1)
    predictor = ExitPredictor(checkpoint, deepest)
    predictor.warmup()
    url = deploy(checkpoint)
    floor = url + deploy_floor()
    warm(url, [data])
    samples: dict[str, list[float]] = {"in_process": [], "floor": [], "router": []}
    router_own: list[float] = []
    headers = {"Content-Type": "audio/wav", "X-Latency-Tier": "batch"}
    with httpx.Client(timeout=60) as client:
        for i in range(rounds + 5):
            t = time.perf_counter()
            predictor.predict([clip])
            local = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            client.post(f"{floor}/v1/predict", content=data, headers=headers).raise_for_status()
            floor_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            r = client.post(f"{url}/v1/predict", content=data, headers={**headers, "X-Request-Start": f"t={time.time():.6f}"})
            router_ms = (time.perf_counter() - t) * 1000
            body = r.json()
            assert body["exit"] == deepest, body
            if i >= 5:  # the first rounds warm the connections
                samples["in_process"].append(local)
                samples["floor"].append(floor_ms)
                samples["router"].append(router_ms)
                router_own.append(body["latency_ms"])
    p50 = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "exit": deepest,
        "clip_seconds": 3.0,
        "rounds": rounds,
        **{f"{k}_p50_ms": v for k, v in p50.items()},
        **{f"{k}_p95_ms": pct(v, 0.95) for k, v in samples.items()},
        "router_own_latency_p50_ms": statistics.median(router_own),
        "goal_ms": p50["floor"] + p50["in_process"] + 3.0,
        "router_minus_floor_minus_model_ms": p50["router"] - p50["floor"] - p50["in_process"],
    }


def section_tiers(checkpoint: str, concurrency: int, requests: int) -> dict:
    clips = [(wav_bytes(noise(s, i)), s) for i, s in enumerate((1.0, 2.0, 3.0))]
    url = deploy(checkpoint)
    warm(url, [c for c, _ in clips])
    budgets = httpx.get(f"{url}/v1/exits").json()["tiers"]
    out = {}
    for tier in ["realtime", "interactive", "batch", "auto"]:
        run = asyncio.run(closed_loop(url, clips, {"X-Latency-Tier": tier}, concurrency, requests=requests))
        out[tier] = summarise(run, budgets[tier])
        out[tier]["budget_ms"] = budgets[tier]
    return out


def base_checkpoint(workdir: Path, threads: int = 1) -> tuple[str, dict]:
    """wav2vec2-base shape, random init, exits 1, 4, 8 + 12 (mean heads), with the
    exit_profile.json that `emodistill evaluate` would write (latency only: no UAR)."""
    from emodistill.checkpoint import save_checkpoint
    from emodistill.evaluate.report import profile_latency
    from emodistill.exit_profile import DeviceInfo, make_profile, write_profile
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    ckpt = workdir / "checkpoint"
    torch.manual_seed(0)
    labels = ["anger", "happiness", "neutral", "sadness"]
    model = build_model(ModelConfig(backbone=BackboneConfig(arch="base"), exits=[1, 4, 8], student_head="mean"), labels).eval()
    save_checkpoint(model, ckpt, metadata={"val_folds": [3]})
    torch.set_num_threads(threads)
    latency = profile_latency(model, [1.0, 2.0, 6.0], repeats=15, warmup=3)
    profile = make_profile(
        model={"name": "wav2vec2-base-random", "version": None, "checkpoint": str(ckpt)},
        labels=labels, device=DeviceInfo.current("cpu"), uar={}, latency=latency,
    )
    write_profile(str(workdir / "report"), profile)
    del model
    return str(ckpt), latency


BASE_DEPLOY = ["deployment.num_cpus=0.25", "deployment.torch_threads=1", "deployment.max_ongoing_requests=32",
               "deployment.max_queued_requests=-1"]


def capacity(ckpt: str, profile: str, exit: str, clip: tuple[bytes, float], seconds: float, concurrency: int = 6) -> dict:
    """Answers per second ``exit`` alone sustains (closed loop, a budget nothing misses)."""
    url = deploy(ckpt, [f"profile={profile}", f"exits=[{exit}]", *BASE_DEPLOY])
    warm(url, [clip[0]], rounds=2, headers=[{"X-Latency-Budget-Ms": NEVER}])
    run = asyncio.run(closed_loop(url, [clip], {"X-Latency-Budget-Ms": NEVER}, concurrency, seconds=seconds))
    s = summarise(run)
    return {"exit": exit, "rps": s["answered_rps"], "p50_ms": s["p50_ms"]}


def section_overload(workdir: Path, seconds: float, capacity_seconds: float, budget_factor: float) -> dict:
    ckpt, latency = base_checkpoint(workdir)
    profile = str(workdir / "report" / "exit_profile.json")
    clip = (wav_bytes(noise(1.0)), 1.0)
    cap12 = capacity(ckpt, profile, "exit_12", clip, capacity_seconds)
    cap1 = capacity(ckpt, profile, "exit_1", clip, capacity_seconds)
    p95_12 = latency["exit_12"]["1"]["p95"]
    budget = int(round(budget_factor * p95_12 / 10.0) * 10)
    url = deploy(ckpt, [f"profile={profile}", *BASE_DEPLOY])
    sla = {"X-Latency-Budget-Ms": str(budget)}
    warm(url, [clip[0]], rounds=3, headers=[{"X-Latency-Budget-Ms": NEVER}, sla])
    out = {"budget_ms": budget, "exit_12_p95_ms_profiled": p95_12, "capacity": {"exit_12": cap12, "exit_1": cap1},
           "profile_ms_1s": {n: v["1"] for n, v in latency.items()}, "runs": {}}
    for factor in (1.5, 3.0):
        rate = factor * cap12["rps"]
        run = asyncio.run(open_loop(url, clip, sla, rate, seconds, seed=int(factor * 10)))
        s = summarise(run, budget)
        s["offered_rps"] = rate
        s["answered_vs_exit_1_capacity"] = s["answered_rps"] / cap1["rps"]
        out["runs"][f"{factor:g}x"] = s
        time.sleep(2.0)  # let the queues drain between rates
    return out


def section_batching(workdir: Path, seconds: float, exit: str = "exit_4") -> dict:
    ckpt = workdir / "checkpoint"
    if not ckpt.exists():
        base_checkpoint(workdir)
    profile = str(workdir / "report" / "exit_profile.json")
    rng = np.random.default_rng(1)
    lengths = [1.0 if i % 2 == 0 else float(rng.uniform(2.0, 30.0)) for i in range(32)]
    clips = [(wav_bytes(noise(s, i)), s) for i, s in enumerate(lengths)]
    settings = {
        "length-aware (16 clips, 16 padded s)": ["deployment.max_batch_size=16", "deployment.max_batch_audio_s=16"],
        "count (8 clips)": ["deployment.max_batch_size=8", "deployment.max_batch_audio_s=null"],
        "none (1 clip)": ["deployment.max_batch_size=1"],
    }
    out = {}
    for name, overrides in settings.items():
        url = deploy(str(ckpt), [f"profile={profile}", f"exits=[{exit}]", *BASE_DEPLOY, *overrides])
        warm(url, [clips[0][0]], rounds=2, headers=[{"X-Latency-Budget-Ms": NEVER}])
        run = asyncio.run(closed_loop(url, clips, {"X-Latency-Budget-Ms": NEVER}, 16, seconds=seconds))
        ok = [r for r in run.results if r.status == 200]
        short = [r.ms for r in ok if r.seconds == 1.0]
        out[name] = {
            "answered": len(ok),
            "rps": len(ok) / run.wall_s,
            "audio_s_per_s": sum(r.seconds for r in ok) / run.wall_s,
            "realtime_p50_ms": pct(short, 0.5),
            "realtime_p95_ms": pct(short, 0.95),
            "all_p95_ms": pct([r.ms for r in ok], 0.95),
        }
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
    warm(url, clips[:3])
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


# ---- tables -------------------------------------------------------------------------------
def print_floor(r: dict) -> None:
    print(f"\n## Floor ({r['exit']}, one {r['clip_seconds']:g} s clip, {r['rounds']} interleaved rounds, client clock)\n")
    print(markdown_table(["path", "p50 ms", "p95 ms"], [
        ["predictor in-process (1 thread)", r["in_process_p50_ms"], r["in_process_p95_ms"]],
        ["plain two-hop Serve app (ingress -> constant)", r["floor_p50_ms"], r["floor_p95_ms"]],
        ["router path (proxy -> router -> exit)", r["router_p50_ms"], r["router_p95_ms"]],
    ]))
    met = r["router_p50_ms"] <= r["goal_ms"]
    print(f"\ngoal: router p50 <= floor p50 + in-process p50 + 3 ms = {r['goal_ms']:.1f} ms: "
          f"{'met' if met else 'missed'} (router - floor - model = {r['router_minus_floor_minus_model_ms']:+.1f} ms; "
          f"router's own latency_ms p50 {r['router_own_latency_p50_ms']:.1f})")


def print_tiers(r: dict, concurrency: int, requests: int) -> None:
    print(f"\n## Tiers ({concurrency} concurrent clients, {requests} requests per tier, 1-3 s clips, client clock)\n")
    rows = []
    for t, v in r.items():
        rows.append([t, v["budget_ms"], v["p50_ms"], v["p95_ms"], v["p99_ms"], v["answered_rps"], v["exits"],
                     v["degraded"], v["refused"], v["refusal_p99_ms"], v["late_client"], f"{v['within_budget']:.1%}",
                     "met" if v["within_budget"] >= 0.95 else "missed"])
    print(markdown_table(["tier", "budget ms", "p50 ms", "p95 ms", "p99 ms", "req/s", "exits", "degraded", "refused",
                          "refusal p99 ms", "late", "within budget", "goal >= 95%"], rows))


def print_overload(r: dict) -> None:
    c = r["capacity"]
    print(f"\n## Overload (wav2vec2-base shape, exits 1, 4, 8 + 12, 1 s clips, budget {r['budget_ms']} ms "
          f"from exit_12's profiled p95 {r['exit_12_p95_ms_profiled']:.0f} ms)\n")
    print(f"capacity alone: exit_12 {c['exit_12']['rps']:.1f} req/s, exit_1 {c['exit_1']['rps']:.1f} req/s\n")
    rows = []
    for k, v in r["runs"].items():
        rows.append([k, f"{v['offered_rps']:.1f}", v["offered"], v["answered"], f"{v['within_budget']:.1%}",
                     f"{v['answered_within_budget']:.1%}", v["refused"], v["refusal_codes"], v["refusal_p99_ms"],
                     v["late_client"], v["p50_ms"], v["p95_ms"], v["p99_ms"], f"{v['answered_rps']:.1f}",
                     f"{v['answered_vs_exit_1_capacity']:.2f}", v["exits"]])
    print(markdown_table(["load", "offered req/s", "offered", "answered", "within budget (of offered)",
                          "within budget (of answered)", "refused", "codes", "refusal p99 ms", "late", "p50 ms", "p95 ms",
                          "p99 ms", "answered req/s", "/ exit_1 capacity", "exits"], rows))
    g15, g3 = r["runs"].get("1.5x"), r["runs"].get("3x")
    if g15 and g3:
        print(f"\ngoals: 1.5x >= 95% of offered within budget: {'met' if g15['within_budget'] >= 0.95 else 'missed'}; "
              f"3x >= 99% of answered within budget: {'met' if g3['answered_within_budget'] >= 0.99 else 'missed'}; "
              f"refusals p99 <= 20 ms: {'met' if g3['refusal_p99_ms'] <= 20 else 'missed'}; "
              f"answered >= 0.9x exit_1 capacity: {'met' if g3['answered_vs_exit_1_capacity'] >= 0.9 else 'missed'}")


def print_batching(r: dict, seconds: float) -> None:
    print(f"\n## Batching (base shape, exit_4 alone, 16 clients for {seconds:g} s, clips 1-30 s, half of them 1 s)\n")
    print(markdown_table(["batching", "answered", "req/s", "audio s / s", "1 s clips p50 ms", "1 s clips p95 ms", "all p95 ms"],
                         [[k, v["answered"], v["rps"], v["audio_s_per_s"], v["realtime_p50_ms"], v["realtime_p95_ms"], v["all_p95_ms"]]
                          for k, v in r.items()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "runs/demo/checkpoint"))
    parser.add_argument("--dataset", default=str(ROOT / "runs/demo/data"))
    parser.add_argument("--folds", default="3", help="held-out folds of the demo (cascade section)")
    parser.add_argument("--sections", default="floor,tiers,overload,batching")
    parser.add_argument("--rounds", type=int, default=100, help="floor: interleaved rounds")
    parser.add_argument("--requests", type=int, default=200, help="tiers: requests per tier")
    parser.add_argument("--concurrency", type=int, default=4, help="tiers: concurrent clients")
    parser.add_argument("--overload-seconds", type=float, default=40.0, help="overload: seconds of arrivals per rate")
    parser.add_argument("--capacity-seconds", type=float, default=20.0, help="overload: seconds per capacity run")
    parser.add_argument("--budget-factor", type=float, default=2.0, help="overload: budget = factor x exit_12's profiled p95")
    parser.add_argument("--batching-seconds", type=float, default=45.0)
    parser.add_argument("--threshold", type=float, default=0.5, help="cascade: margin threshold")
    parser.add_argument("--workdir", help="where the base-shape checkpoint goes (default: a temporary directory)")
    parser.add_argument("--out", help="write every figure as JSON here")
    opts = parser.parse_args()

    from emodistill.cluster import init_ray
    from ray import serve

    init_ray(quiet=True)
    sections = [s for s in opts.sections.split(",") if s]
    results: dict = {}
    tmp = tempfile.TemporaryDirectory()
    workdir = Path(opts.workdir or tmp.name)
    try:
        for section in sections:
            if section == "floor":
                results["floor"] = section_floor(opts.checkpoint, opts.rounds)
                print_floor(results["floor"])
            elif section == "tiers":
                results["tiers"] = section_tiers(opts.checkpoint, opts.concurrency, opts.requests)
                print_tiers(results["tiers"], opts.concurrency, opts.requests)
            elif section == "overload":
                results["overload"] = section_overload(workdir, opts.overload_seconds, opts.capacity_seconds, opts.budget_factor)
                print_overload(results["overload"])
            elif section == "batching":
                results["batching"] = section_batching(workdir, opts.batching_seconds)
                print_batching(results["batching"], opts.batching_seconds)
            elif section == "cascade":
                folds = [int(f) for f in opts.folds.split(",")]
                r = results["cascade"] = section_cascade(opts.checkpoint, opts.dataset, folds, opts.threshold)
                print("\n## Cascade (tier auto) against always-deep, held-out clips over HTTP\n")
                print(markdown_table(["policy", "UAR", "mean ms", "p95 ms", "mean block"],
                                     [[k, v["uar"], v["mean_ms"], v["p95_ms"], v["mean_block"]] for k, v in r.items()]))
            else:
                raise SystemExit(f"unknown section {section!r}")
            sys.stdout.flush()
            if opts.out:  # after every section: a run cut short keeps what it measured
                Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
                Path(opts.out).write_text(json.dumps(results, indent=2, default=str))
    finally:
        serve.shutdown()
        tmp.cleanup()


if __name__ == "__main__":
    main()
