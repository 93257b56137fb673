"""`emodistill` console script. Each command parses arguments and calls the library."""

from __future__ import annotations

import json
from typing import Literal, Optional

import typer

from emodistill import __version__
from emodistill.cli.config_cmd import config_app
from emodistill.cli.export import export as export_cmd
from emodistill.cli.predict import predict as predict_cmd
from emodistill.data.corpora import FORMATS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fast yet effective speech emotion recognition with self-distillation, on Ray.",
)
app.add_typer(config_app, name="config")
FormatChoice = Literal[FORMATS]  # type: ignore[valid-type]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"emodistill {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Fast yet effective speech emotion recognition with self-distillation, on Ray."""


def _parse_blocks(text: str | None) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise typer.BadParameter(f"expected comma-separated block numbers like 1,3,6,12, got {text!r}") from err


@app.command()
def profile(
    arch: Optional[str] = typer.Option(None, help="Random-init shape: tiny or base (wav2vec2-base)."),
    backbone: Optional[str] = typer.Option(None, help="Hub id, local directory or s3:// prefix of a backbone."),
    family: str = typer.Option("wav2vec2", help="Model family used with --arch."),
    exits: Optional[str] = typer.Option(None, help="Comma-separated blocks to profile, e.g. 1,3,6,12 (default: all)."),
    seconds: float = typer.Option(3.0, min=0.1, help="Clip length in seconds."),
    repeats: int = typer.Option(20, min=1, help="Timed runs per model (after warm-up)."),
    warmup: int = typer.Option(3, min=0, help="Untimed runs before timing."),
    student_head: str = typer.Option("gru", help="Head type of the student exits: gru, lstm, conv or mean."),
    teacher_head: str = typer.Option("mean", help="Head type of the deepest exit."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch intra-op threads (default: torch's choice)."),
    device: str = typer.Option("cpu", help="Where to time: cpu, cuda or cuda:<n> (CUDA calls synchronised)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Cut the model at every exit and measure parameters and batch-1 latency of each."""
    import torch

    from emodistill.evaluate.latency import profile_exits
    from emodistill.evaluate.tables import profile_table
    from emodistill.model import BackboneConfig, EarlyExitModel, ModelConfig, load_backbone
    from emodistill.exits import exit_name
    from emodistill.model.early_exit import resolve_spec

    if arch is not None and backbone is not None:
        raise typer.BadParameter("give --arch or --backbone, not both")
    if threads:
        torch.set_num_threads(threads)
    bb = BackboneConfig(pretrained=backbone) if backbone else BackboneConfig(arch=arch or "tiny", family=family)
    encoder = load_backbone(bb)
    depth = encoder.config.num_hidden_layers
    blocks = _parse_blocks(exits) or list(range(1, depth + 1))
    labels = ["anger", "happiness", "neutral", "sadness"]
    model = EarlyExitModel(encoder, resolve_spec(
        ModelConfig(backbone=bb, exits=blocks, student_head=student_head, teacher_head=teacher_head), labels, depth
    ))
    names = [exit_name(b) for b in blocks]
    report = profile_exits(model, names, seconds=seconds, warmup=warmup, repeats=repeats, device=device)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(profile_table(report))


@app.command()
def synth(
    out_dir: str = typer.Argument(..., help="Directory to write wav/ and manifest.csv into."),
    seed: int = typer.Option(0, help="Seed: the same seed gives byte-identical files."),
    speakers: int = typer.Option(12, min=2, help="Number of synthetic speakers."),
    emotions: str = typer.Option("angry,happy,neutral,sad", help="Comma-separated emotions."),
    utterances: int = typer.Option(10, min=1, help="Utterances per speaker and emotion."),
    min_seconds: float = typer.Option(1.5, help="Shortest clip, seconds."),
    max_seconds: float = typer.Option(3.5, help="Longest clip, seconds."),
) -> None:
    """Generate the synthetic acted-emotion corpus (audio files + manifest.csv)."""
    from emodistill.data.synth import SynthConfig, synthesize

    cfg = SynthConfig(
        seed=seed,
        speakers=speakers,
        emotions=[e.strip() for e in emotions.split(",") if e.strip()],
        utterances=utterances,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
    )
    manifest = synthesize(out_dir, cfg, progress=True)
    typer.echo(f"wrote {manifest}")


@app.command()
def ingest(
    source: str = typer.Argument(..., help="Corpus root: local directory or s3:// prefix."),
    dest: str = typer.Argument(..., help="Dataset directory or s3:// prefix to write."),
    format: FormatChoice = typer.Option("auto", "--format", help="Corpus layout (auto: detect it)."),
    labels: Optional[str] = typer.Option(
        None, help="Label mapping: a preset (iemocap4, basic4), a YAML file, or from=to pairs ('-' drops)."
    ),
    folds: int = typer.Option(5, min=2, help="Speaker-independent folds when the corpus defines none."),
    seed: int = typer.Option(0, help="Seed of the fold assignment."),
    min_seconds: float = typer.Option(0.25, help="Reject shorter clips."),
    max_seconds: float = typer.Option(30.0, help="Reject longer clips."),
    shard_mb: float = typer.Option(128.0, help="Target shard size, MB."),
    workers: Optional[int] = typer.Option(None, min=1, help="Decode processes (default: all cores)."),
    s3_endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint (default: env AWS_ENDPOINT_URL)."),
    s3_key: Optional[str] = typer.Option(None, help="S3 access key id (default: env AWS_ACCESS_KEY_ID)."),
    s3_secret: Optional[str] = typer.Option(None, help="S3 secret key (default: env AWS_SECRET_ACCESS_KEY)."),
    s3_region: Optional[str] = typer.Option(None, help="S3 region (default: env AWS_REGION)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Ingest a labelled corpus into Parquet shards; list every rejected file with its reason."""
    from emodistill.data.ingest import IngestConfig, ingest as run_ingest, parse_label_mapping
    from emodistill.storage import S3Options

    cfg = IngestConfig(
        source=source,
        dest=dest,
        format=format,
        labels=parse_label_mapping(labels),
        folds=folds,
        seed=seed,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        shard_mb=shard_mb,
        workers=workers,
        s3=S3Options(endpoint_url=s3_endpoint_url, key=s3_key, secret=s3_secret, region=s3_region),
    )
    report = run_ingest(cfg, progress=progress)
    typer.echo(report.summary())


def _print_exit_table(metrics: dict) -> None:
    from emodistill.evaluate.metrics import exits_in, metric_key
    from emodistill.evaluate.tables import markdown_table

    rows = [[n, *(metrics[metric_key(n, k)] for k in ("uar", "wa", "macro_f1"))] for n in exits_in(metrics)]
    typer.echo(markdown_table(["exit", "val UAR", "val WA", "val macro-F1"], rows))


def _parse_folds(folds: str) -> list[int] | None:
    return None if folds.strip() == "all" else [int(f) for f in _parse_blocks(folds) or []]


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: str = typer.Option(..., "--config", help="Training config YAML (see jobs/configs/)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the config, dataset, selection, exits and metric (no Ray); print the plan; exit."
    ),
    folds: Optional[str] = typer.Option(
        None, help="'all' (or 0,2,4): cross-validation, each fold tested once; selection on speakers of the others."
    ),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: RAY_ADDRESS or a local cluster)."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray's own log lines too (they always go to the run's log file)."),
    track: bool = typer.Option(True, "--tracking/--no-tracking", help="Record an MLflow run (MLFLOW_TRACKING_URI, else <storage_path>/mlruns)."),
) -> None:
    """Self-distillation fine-tuning on Ray Train. Extra arguments are key=value overrides."""
    from emodistill.train.config import TrainConfig
    from emodistill.train.preflight import preflight

    cfg = TrainConfig.from_yaml(config, list(ctx.args))
    if folds:
        from emodistill.data.schema import read_info
        from emodistill.train.cv import fold_config

        chosen = _parse_folds(folds)
        plans = [preflight(fold_config(cfg, f)) for f in (chosen or read_info(cfg.data.dataset, cfg.data.s3).folds)]
    else:
        plans = [preflight(cfg)]
    if dry_run:
        typer.echo(cfg.to_yaml().rstrip())
        for plan in plans:
            typer.echo("\n".join(f"# {line}" for line in [f"run {plan.cfg.run.name}:", *plan.lines()]))
        return
    from emodistill import console
    from emodistill.cluster import init_ray

    console.set_verbose(verbose)
    log = console.run_log(cfg.run.storage_path, cfg.run.name)
    init_ray(address, log_file=log)
    typer.echo(f"Ray's log: {log}")
    if folds:
        from emodistill.train.cv import cross_validate, cv_table, fold_table

        summary = cross_validate(cfg, _parse_folds(folds))
        typer.echo(cv_table(summary))
        typer.echo("")
        typer.echo(fold_table(summary))
        typer.echo(f"\ncv.json, cv.md: {summary['out']}")
        return
    from emodistill.train.driver import fit

    from emodistill import tracking

    if not track:
        tracking.disable()
    result = fit(cfg, tracking_uri=tracking.run_uri(cfg.run.storage_path))
    _print_exit_table(result.best_metrics)
    metric = cfg.run.checkpoint_metric
    typer.echo(f"best checkpoint (epoch {int(result.best_metrics['epoch']) + 1}, {metric} = "
               f"{result.best_metrics[metric]:.3f}): {result.best_checkpoint}")
    if result.tracking is not None:
        typer.echo(f"MLflow run {result.tracking.run_id} (experiment {result.tracking.experiment}): "
                   f"{tracking.ui_command(result.tracking.uri)}")
    typer.echo(f"test it: emodistill evaluate {result.best_checkpoint} {cfg.data.dataset}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def tune(
    ctx: typer.Context,
    config: str = typer.Option(..., "--config", help="Sweep config YAML (see jobs/configs/tune_*.yaml)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the sweep and its train config, print, exit."),
    resume: Optional[bool] = typer.Option(
        None, "--resume/--no-resume", help="Continue the sweep stored under its name (default: when it exists)."
    ),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: RAY_ADDRESS or a local cluster)."),
    device: Optional[str] = typer.Option(
        None, help="Where the driver times the exits when there is no latency_profile: cpu, cuda or cuda:<n> (sets latency_device)."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray's own log lines too (they always go to the run's log file)."),
    track: bool = typer.Option(True, "--tracking/--no-tracking", help="Record an MLflow run (MLFLOW_TRACKING_URI, else <storage_path>/mlruns)."),
) -> None:
    """Ray Tune sweep of the loss weights (and temperature, learning rate, exits). Extra
    arguments are key=value overrides of the sweep config."""
    from emodistill.tune.config import SweepConfig

    cfg = SweepConfig.from_yaml(config, list(ctx.args) + ([f"latency_device={device}"] if device else []))
    from emodistill.evaluate.objectives import OBJECTIVES
    from emodistill.train.preflight import preflight

    plan = preflight(cfg.check(), check_storage=False)  # dataset, folds, exits: before any trial
    if dry_run:
        typer.echo(cfg.to_yaml().rstrip())
        typer.echo("\n".join(f"# {line}" for line in ["every trial starts from:", *plan.lines()]))
        return
    from emodistill import console
    from emodistill.cluster import init_ray
    from emodistill.evaluate.tables import markdown_table
    from emodistill.tune.sweep import run_sweep

    console.set_verbose(verbose)
    log = console.run_log(cfg.storage_path, cfg.name)
    init_ray(address, log_file=log)
    typer.echo(f"Ray's log: {log}")
    from emodistill import tracking

    if not track:
        tracking.disable()
    summary = run_sweep(cfg, resume)
    columns = ["trial_id", *cfg.search, *OBJECTIVES, "given"]
    typer.echo(markdown_table(columns, [[r[c] for c in columns] for r in summary["rows"]]))
    typer.echo(f"results: {cfg.out_dir}/results.md, plot: {cfg.out_dir}/pareto.png, best: {cfg.out_dir}/best/")
    if summary.get("tracking_uri"):
        typer.echo(f"MLflow: experiment {cfg.name}, one run per trial: {tracking.ui_command(summary['tracking_uri'])}")


@app.command()
def evaluate(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory (local or s3://)."),
    dataset: str = typer.Argument(..., help="Dataset URI."),
    folds: Optional[str] = typer.Option(None, help="Folds to evaluate, e.g. 0,1 (default: the test part of the checkpoint's run)."),
    splits: Optional[str] = typer.Option(None, help="Splits to evaluate instead, e.g. test."),
    out: Optional[str] = typer.Option(None, help="Output directory (default: report/ beside the checkpoint)."),
    repeats: int = typer.Option(20, min=1, help="Timed runs per exit and clip length."),
    latency_seconds: str = typer.Option("1,3,6", help="Clip lengths (s) at which latency is profiled."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads while timing."),
    device: str = typer.Option("cpu", help="Where latency is measured: cpu, cuda or cuda:<n> (recorded in exit_profile.json)."),
    full_clips: bool = typer.Option(
        False, "--full-clips", help="Evaluate whole clips instead of the checkpoint's own preprocessing."
    ),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also score the eGeMAPS + LR floor."),
    as_json: bool = typer.Option(False, "--json", help="Print report.json instead of the table."),
) -> None:
    """Per-exit UAR/WA/F1 and cut-model latency, fusion and early-exit sweeps; writes the report files."""
    from emodistill.evaluate.report import EvaluateConfig, evaluate as run_evaluate
    from emodistill.evaluate.report import EXIT_HEADERS, exit_rows
    from emodistill.evaluate.tables import markdown_table

    cfg = EvaluateConfig(
        checkpoint=checkpoint,
        dataset=dataset,
        folds=_parse_blocks(folds),
        splits=[s.strip() for s in splits.split(",")] if splits else None,
        out=out,
        repeats=repeats,
        latency_seconds=[float(s) for s in latency_seconds.split(",") if s.strip()],
        threads=threads,
        device=device,
        preprocessing="full" if full_clips else "checkpoint",
        baseline=baseline,
    )
    report = run_evaluate(cfg)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(markdown_table(EXIT_HEADERS, exit_rows(report)))
    typer.echo(f"report: {report['out']}/report.md, plot: {report['out']}/accuracy_latency.png")


@app.command()
def demo(
    config: str = typer.Option("jobs/configs/demo_cpu.yaml", help="Training config of the demo."),
    root: str = typer.Option("runs/demo", help="Where everything lands (replaced on every run)."),
    serve_config: str = typer.Option("serve_configs/local.yaml", help="Serve config of the serving step."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="End by serving every exit and querying each tier."),
    port: Optional[int] = typer.Option(None, help="HTTP port of the serving step (default: the serve config's)."),
    speakers: int = typer.Option(12, min=4, help="Speakers of the synthetic corpus."),
    utterances: int = typer.Option(10, min=1, help="Clips per speaker and emotion."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray's own log lines too (they always go to <root>/ray.log)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides of the training config."),
) -> None:
    """The main job on the embedded defaults: synth -> ingest -> train -> evaluate -> serve."""
    from emodistill import console
    from emodistill.demo import run_demo

    console.set_verbose(verbose)
    run_demo(config=config, root=root, serve_config=serve_config if serve else None, overrides=list(overrides or []),
             synth={"speakers": speakers, "utterances": utterances}, port=port)


app.command("predict")(predict_cmd)  # defined in their own modules (cli/predict.py, cli/export.py)
app.command("export")(export_cmd)


def main() -> None:
    """Console entry: known user errors print one line, not a traceback."""
    import sys

    try:
        app(standalone_mode=True)
    except (ValueError, FileNotFoundError, PermissionError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
