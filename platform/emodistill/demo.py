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


SERVE_HEADERS = ["tier", "budget ms", "status", "exit", "degraded", "late", "truth", "answer", "latency ms"]


def run_demo(
    config: str = "jobs/configs/demo_cpu.yaml",
    root: str = "runs/demo",
    folds: int = 4,
    serve_config: str | None = "serve_configs/local.yaml",
    overrides: list[str] | None = None,
    synth: dict | None = None,
    port: int | None = None,
) -> dict:
    """The demo pipeline; ``serve_config=None`` stops after evaluate; ``overrides`` change
    the training config, ``synth`` the corpus (both for a smaller run, e.g. in tests)."""
    from emodistill import console, tracking
    from emodistill.cluster import init_ray
    from emodistill.data.ingest import IngestConfig, ingest
    from emodistill.data.synth import SynthConfig, synthesize
    from emodistill.evaluate.report import EvaluateConfig, evaluate
    from emodistill.train.config import TrainConfig
    from emodistill.train.driver import fit

    began = time.perf_counter()
    base = Path(root)
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    total = 5 if serve_config else 4
    defaults = [
        f"data.dataset={base / 'data'}",
        f"run.storage_path={base / 'ray'}",
        f"run.export_dir={base / 'checkpoint'}",
    ]
    train_cfg = TrainConfig.from_yaml(config, defaults + list(overrides or []))  # validate before spending minutes
    log = console.route_ray_output(base / "ray.log")
    tracking_uri = tracking.default_uri(base / "mlruns")

    t = _step(1, total, "synthesise the demo corpus (emodistill synth)")
    synth_cfg = SynthConfig(**(synth or {}))
    synthesize(base / "corpus", synth_cfg, progress=True)
    clips = synth_cfg.speakers * len(synth_cfg.emotions) * synth_cfg.utterances
    typer.echo(f"      {synth_cfg.speakers} speakers x {len(synth_cfg.emotions)} emotions x {synth_cfg.utterances} clips")
    _done(t)

    t = _step(2, total, "ingest into Parquet shards (emodistill ingest)")
    report = ingest(IngestConfig(source=str(base / "corpus"), dest=str(base / "data"), folds=folds), progress=True)
    typer.echo("      " + report.summary().replace("\n", "\n      "))
    _done(t)

    t = _step(3, total, f"self-distillation fine-tuning on Ray Train ({train_cfg.scaling.num_workers} workers)")
    init_ray(log_file=log)
    result = fit(train_cfg, tracking_uri=tracking_uri)
    metric = train_cfg.run.checkpoint_metric
    best_epoch = int(result.best_metrics["epoch"]) + 1
    typer.echo(f"      best: epoch {best_epoch} ({metric} = {result.best_metrics[metric]:.3f}) -> {result.best_checkpoint}")
    _done(t)

    t = _step(4, total, "evaluate every exit on the test speakers: accuracy and latency (emodistill evaluate)")
    evaluation = evaluate(
        EvaluateConfig(checkpoint=str(base / "checkpoint"), dataset=str(base / "data"), out=str(base / "report"))
    )
    if result.tracking is not None:
        tracking.log_report(result.tracking, base / "report")
    _done(t)

    rows = None
    if serve_config:
        t = _step(5, total, f"serve every exit behind the SLA router ({serve_config}) and query each tier")
        rows = serve_and_query(
            serve_config, str(base / "checkpoint"), str(base / "data"), evaluation["eval"]["folds"], port=port
        )
        _done(t)
    summary(base, clips, folds, best_epoch, metric, result, evaluation, rows, serve_config, log,
            time.perf_counter() - began)
    return evaluation


def summary(base: Path, clips, folds, best_epoch, metric, result, evaluation, rows, serve_config, log, seconds) -> None:
    """The demo's last screen: what was made and where, the per-exit and serving tables,
    the commands to try next."""
    from emodistill import tracking
    from emodistill.evaluate.report import EXIT_HEADERS, exit_rows
    from emodistill.evaluate.tables import markdown_table

    typer.secho(f"\nDone in {seconds / 60:.1f} min. Everything is under {base}/:", bold=True)
    made = [
        ("corpus/", f"synthetic acted-emotion speech, {clips} clips + manifest.csv"),
        ("data/", f"Parquet shards, {folds} speaker-independent folds"),
        ("checkpoint/", f"the selected model (epoch {best_epoch}, {metric} {result.best_metrics[metric]:.3f})"),
        ("report/", "report.md, accuracy_latency.png, exit_profile.json (the router reads it)"),
    ]
    if result.tracking is not None:
        made.append((result.tracking.store_label(base), f"MLflow run {result.tracking.run_id[:8]} (params, metrics per epoch, report)"))
    made.append((str(Path(log).relative_to(Path(base).absolute())) if Path(log).is_relative_to(Path(base).absolute()) else str(log),
                 "Ray's own log lines (--verbose shows them)"))
    width = max(len(k) for k, _ in made)
    for key, text in made:
        typer.echo(f"  {key:<{width}}  {text}")
    typer.secho("\nEvery exit on the test speakers (the checkpoint was selected on others)", bold=True)
    typer.echo(markdown_table(EXIT_HEADERS, exit_rows(evaluation)))
    if rows is not None:
        typer.secho("\nOne held-out clip per latency tier, over HTTP through the SLA router", bold=True)
        typer.echo(markdown_table(SERVE_HEADERS, rows))
    typer.secho("\nNext", bold=True)
    nxt = [
        (f".venv/bin/serve run {serve_config or 'serve_configs/local.yaml'}", "serve it on 127.0.0.1:8000 until Ctrl-C"),
        ("curl -H 'X-Latency-Tier: realtime' --data-binary @CLIP.wav \\", ""),
        ("     -H 'Content-Type: audio/wav' http://127.0.0.1:8000/v1/predict", "ask for an answer within the realtime budget"),
        (f"open {base}/report/report.md", "fusion and early-exit policies, cost per exit"),
        ("make tune-demo   /   make cv-demo", "a loss-weight sweep / every fold tested once"),
    ]
    if result.tracking is not None:
        nxt.append((tracking.ui_command(result.tracking.uri), "browse the runs (`pip install mlflow` for the UI)"))
    width = max(len(c) for c, _ in nxt)
    for cmd, text in nxt:
        typer.echo(f"  {cmd:<{width}}  {('# ' + text) if text else ''}".rstrip())


def serve_and_query(
    serve_config: str, checkpoint: str, dataset: str, folds: list[int] | None, port: int | None = None
) -> list[list]:
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
    from emodistill import console

    console.quiet_python_loggers()  # ray.serve's loggers exist now (imported above)
    url = start_from_config(serve_config, [f"checkpoint={checkpoint}"], port=port)
    console.quiet_python_loggers()
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
                post(i % len(arrays["waveform"]), tier=["batch", "realtime", "interactive"][i % 3])
            except ApiError:
                pass
        queries = [{"tier": t} for t in ("realtime", "interactive", "batch", "auto")]
        queries.append({"budget_ms": 3})  # no exit answers in 3 ms: refused at once
        for i, query in enumerate(queries):
            index = (i * 7) % len(arrays["waveform"])
            truth = labels[int(arrays["label_id"][index])]
            budget = query.get("budget_ms")
            try:
                answer = post(index, **query)
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
