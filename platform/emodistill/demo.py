"""`make demo`: the main job on the embedded defaults, end to end on a fresh machine.

    synth    -> runs/demo/corpus   (synthetic acted-emotion speech + manifest.csv)
    ingest   -> runs/demo/data     (Parquet shards, speaker-independent folds)
    train    -> runs/demo/checkpoint (Ray Train, 2 workers, tiny model, self-distillation)
    evaluate -> runs/demo/report   (per-exit UAR and latency, plot, exit_profile.json)
    serve    -> serve_configs/local.yaml on 127.0.0.1:8000, one held-out clip per tier over HTTP

Re-running replaces runs/demo cleanly.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer


def _step(n: int, total: int, text: str) -> float:
    typer.secho(f"\n[{n}/{total}] {text}", bold=True)
    return time.perf_counter()


def _done(started: float) -> None:
    typer.echo(f"      done in {time.perf_counter() - started:.1f} s")


def run_demo(
    config: str = "jobs/configs/demo_cpu.yaml",
    root: str = "runs/demo",
    folds: int = 4,
    serve_config: str = "serve_configs/local.yaml",
) -> dict:
    from emodistill.cluster import init_ray
    from emodistill.data.ingest import IngestConfig, ingest
    from emodistill.data.synth import SynthConfig, synthesize
    from emodistill.evaluate.report import EXIT_HEADERS, EvaluateConfig, evaluate, exit_rows
    from emodistill.evaluate.tables import markdown_table
    from emodistill.train.config import TrainConfig
    from emodistill.train.driver import fit

    base = Path(root)
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    total = 5
    overrides = [
        f"data.dataset={base / 'data'}",
        f"run.storage_path={base / 'ray'}",
        f"run.export_dir={base / 'checkpoint'}",
    ]
    train_cfg = TrainConfig.from_yaml(config, overrides)  # validate before spending minutes

    t = _step(1, total, "synthesise the demo corpus (emodistill synth)")
    synth_cfg = SynthConfig()
    synthesize(base / "corpus", synth_cfg, progress=True)
    typer.echo(f"      {synth_cfg.speakers} speakers x {len(synth_cfg.emotions)} emotions x {synth_cfg.utterances} clips")
    _done(t)

    t = _step(2, total, "ingest into Parquet shards (emodistill ingest)")
    report = ingest(IngestConfig(source=str(base / "corpus"), dest=str(base / "data"), folds=folds), progress=True)
    typer.echo("      " + report.summary().replace("\n", "\n      "))
    _done(t)

    t = _step(3, total, f"self-distillation fine-tuning on Ray Train ({train_cfg.scaling.num_workers} workers)")
    init_ray()
    result = fit(train_cfg)
    metric = train_cfg.run.checkpoint_metric
    typer.echo(f"      best checkpoint ({metric} = {result.best_metrics[metric]:.3f}) -> {result.best_checkpoint}")
    _done(t)

    t = _step(4, total, "evaluate every exit: accuracy and latency (emodistill evaluate)")
    evaluation = evaluate(
        EvaluateConfig(checkpoint=str(base / "checkpoint"), dataset=str(base / "data"), out=str(base / "report"))
    )
    _done(t)

    typer.secho("\nPer-exit results on the test speakers (the checkpoint was selected on others)", bold=True)
    typer.echo(markdown_table(EXIT_HEADERS, exit_rows(evaluation)))
    typer.echo(f"\nplot:   {base / 'report' / 'accuracy_latency.png'}")
    typer.echo(f"report: {base / 'report' / 'report.md'}")

    t = _step(5, total, f"serve every exit behind the SLA router ({serve_config}) and query each tier")
    rows = serve_and_query(serve_config, str(base / "checkpoint"), str(base / "data"), evaluation["eval"]["folds"])
    typer.echo(markdown_table(["tier", "budget ms", "status", "exit", "degraded", "late", "truth", "answer", "latency ms"], rows))
    _done(t)
    typer.echo(f"\nserve it yourself: .venv/bin/serve run {serve_config}   (then POST audio to http://127.0.0.1:8000/v1/predict)")
    return evaluation


def serve_and_query(serve_config: str, checkpoint: str, dataset: str, folds: list[int] | None) -> list[list]:
    """Deploy ``serve_config`` for ``checkpoint``, POST a held-out clip under every tier
    over real HTTP, shut the app down again; one table row per request (a refusal is a
    row too: the router answers 503 at once when no exit can meet the budget)."""
    import io

    import soundfile as sf
    from ray import serve

    from emodistill.client import ApiError, Client
    from emodistill.data.rows import load_arrays
    from emodistill.data.schema import read_info
    from emodistill.serve.local import start_from_config

    labels = read_info(dataset).labels
    arrays = load_arrays(dataset, folds=folds)
    url = start_from_config(serve_config, [f"checkpoint={checkpoint}"])
    # no retries: a refusal (503 with Retry-After) is one of the rows shown
    client = Client(url, timeout=60, max_retries=0)

    def post(i: int, tier: str | None = None, budget_ms: int | None = None):
        wave = arrays["waveform"][i]
        buf = io.BytesIO()
        sf.write(buf, wave, 16000, format="WAV")
        # X-Request-Start: the deadline runs from when the client sent it, as behind a load balancer
        return client.predict(
            buf.getvalue(), tier=tier, budget_ms=budget_ms, content_type="audio/wav",
            headers={"X-Request-Start": f"t={time.time():.6f}"},
        )

    rows = []
    try:
        # warm-up traffic: the router learns this machine's latencies (its profile came from
        # `evaluate`, run without Serve's overhead) before the answers that are shown
        for i in range(12):
            try:
                post(i, tier=["batch", "realtime", "interactive"][i % 3])
            except ApiError:
                pass
        queries = [{"tier": t} for t in ("realtime", "interactive", "batch", "auto")]
        queries.append({"budget_ms": 3})  # no exit answers in 3 ms: refused at once
        for i, query in enumerate(queries):
            truth = labels[int(arrays["label_id"][i * 7])]
            budget = query.get("budget_ms")
            try:
                answer = post(i * 7, **query)
            except ApiError as err:
                tier = query.get("tier") or f"custom ({budget} ms)"
                rows.append([tier, budget or "", f"{err.status} {err.code}", "", "", "", truth, "", ""])
                continue
            body = answer.body
            tier = body["tier"] if body["tier"] != "custom" else f"custom ({budget} ms)"
            rows.append([tier, body["budget_ms"], 200, body["exit"], body["degraded"], body["late"], truth,
                         body["label"], body["latency_ms"]])
    finally:
        client.close()
        serve.shutdown()
    return rows
