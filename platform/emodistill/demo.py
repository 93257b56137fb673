"""`make demo`: the main job on the embedded defaults, end to end on a fresh machine.

    synth    -> runs/demo/corpus   (synthetic acted-emotion speech + manifest.csv)
    ingest   -> runs/demo/data     (Parquet shards, speaker-independent folds)
    train    -> runs/demo/checkpoint (Ray Train, 2 workers, tiny model, self-distillation)
    evaluate -> runs/demo/report   (per-exit UAR and latency, plot, exit_profile.json)

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


def run_demo(config: str = "jobs/configs/demo_cpu.yaml", root: str = "runs/demo", folds: int = 4) -> dict:
    from emodistill.cluster import init_ray
    from emodistill.data.ingest import IngestConfig, ingest
    from emodistill.data.synth import SynthConfig, synthesize
    from emodistill.evaluate.report import EXIT_HEADERS, EvaluateConfig, evaluate, exit_rows
    from emodistill.evaluate.tables import markdown_table
    from emodistill.train.config import TrainConfig
    from emodistill.train.loop import fit

    base = Path(root)
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    total = 4
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

    typer.secho("\nPer-exit results on held-out speakers", bold=True)
    typer.echo(markdown_table(EXIT_HEADERS, exit_rows(evaluation)))
    typer.echo(f"\nplot:   {base / 'report' / 'accuracy_latency.png'}")
    typer.echo(f"report: {base / 'report' / 'report.md'}")
    return evaluation
