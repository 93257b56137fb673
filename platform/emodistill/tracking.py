"""Experiment tracking with MLflow: the one module that names what a run records.

    train   one MLflow run per `emodistill train` (experiment = ``run.name``), logged from
            the driver: the config as params (``model.exits``, ``loss.kd_weight``, ...),
            every reported epoch's metrics at step = epoch (1-based; ``val/exit_3/uar``,
            ``train/loss/total``, ...), then the best epoch's metrics as ``best/...``,
            ``checkpoint.json`` (where the selected and the Ray checkpoints are) and,
            after `evaluate`, the report (``report.md``, ``report.json``, the plot,
            ``exit_profile.json``) as artifacts.
    tune    Ray's ``MLflowLoggerCallback``: one MLflow run per trial (its config and every
            report) in experiment ``<sweep name>``; the sweep's tables, Pareto plot and
            best config as artifacts of a ``<sweep name>-summary`` run.

Where: ``MLFLOW_TRACKING_URI`` when set (a tracking server), else a local file store under
the run folder (``<storage_path>/mlruns``; the demo's ``runs/demo/mlruns``). MLflow 3
refuses a file store unless ``MLFLOW_ALLOW_FILE_STORE=true``; this module sets it for the
store it chose. ``EMODISTILL_TRACKING=off`` (or ``--no-tracking``) records nothing.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACKING_ENV = "EMODISTILL_TRACKING"


def enabled() -> bool:
    return os.environ.get(TRACKING_ENV, "on").strip().lower() not in ("0", "off", "false", "no")


def disable() -> None:
    os.environ[TRACKING_ENV] = "off"


def default_uri(local_dir: str | Path) -> str | None:
    """``MLFLOW_TRACKING_URI`` if set, else a file store at ``local_dir``; None when
    tracking is off."""
    if not enabled():
        return None
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return Path(local_dir).absolute().as_uri()


def run_uri(storage_path: str) -> str | None:
    """The tracking URI of a run stored at ``storage_path`` (``runs/mlruns`` for ``s3://``)."""
    return default_uri(Path("runs" if "://" in storage_path else storage_path) / "mlruns")


def ui_command(uri: str) -> str:
    """How to browse the runs at ``uri``: MLflow's UI is not part of mlflow-skinny (the
    pinned client), so a file store needs ``pip install mlflow`` for it."""
    if uri.startswith("file://"):
        return f"mlflow ui --backend-store-uri {uri}"
    return f"open {uri}"


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: ``{"optim.lr_heads": "0.002", ...}``."""
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
    else:
        text = json.dumps(tree) if isinstance(tree, (list, tuple)) else str(tree)
        out[prefix[:-1]] = text[:6000]
    return out


def numeric(metrics: dict) -> dict[str, float]:
    """The finite numbers of a report (MLflow keeps floats only)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


@dataclass
class TrainTracking:
    """One MLflow run of a training run; every call is a no-op-safe client call."""

    uri: str
    run_id: str
    experiment: str

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def log_epoch(self, metrics: dict) -> None:
        from mlflow.entities import Metric
        import time

        step = int(metrics.get("epoch", 0)) + 1
        now = int(time.time() * 1000)
        self.client().log_batch(
            self.run_id, metrics=[Metric(k, v, now, step) for k, v in numeric(metrics).items() if k != "epoch"]
        )

    def log_dict(self, obj: dict, name: str) -> None:
        self.client().log_dict(self.run_id, obj, name)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client().log_artifact(self.run_id, str(path), folder)

    def finish(self, status: str = "FINISHED") -> None:
        self.client().set_terminated(self.run_id, status)

    def store_label(self, base: Path) -> str:
        """How the summary names the store: a folder under ``base``, or the server URI."""
        if self.uri.startswith("file://"):
            path = Path(self.uri[len("file://"):])
            try:
                return str(path.relative_to(Path(base).absolute())) + "/"
            except ValueError:
                return str(path) + "/"
        return self.uri


def start_train_run(uri: str | None, cfg) -> TrainTracking | None:
    """Open the MLflow run of training config ``cfg`` (a TrainConfig) and log its params."""
    if uri is None:
        return None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = cfg.run.name
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=cfg.run.name, tags={"emodistill.kind": "train"})
    params = flatten(cfg.model_dump(mode="json"))
    client.log_batch(run.info.run_id, params=[_param(k, v) for k, v in params.items()])
    return TrainTracking(uri=uri, run_id=run.info.run_id, experiment=experiment)


def _param(key: str, value: str):
    from mlflow.entities import Param

    return Param(key, value)


def finish_train_run(tracking: TrainTracking | None, history: list[dict], best_metrics: dict,
                     best_checkpoint: str, ray_checkpoint: str | None, live: bool) -> None:
    """After ``fit``: every epoch (unless they were logged live), ``best/...`` metrics,
    ``checkpoint.json``; closes the run."""
    if tracking is None:
        return
    if not live:
        for metrics in history:
            tracking.log_epoch(metrics)
    best = {f"best/{k}": v for k, v in numeric(best_metrics).items()}
    best["best/epoch"] = float(int(best_metrics.get("epoch", 0)) + 1)
    tracking.client().log_batch(tracking.run_id, metrics=[_metric(k, v) for k, v in best.items()])
    tracking.client().set_tag(tracking.run_id, "emodistill.checkpoint", best_checkpoint)
    tracking.log_dict({"best_checkpoint": best_checkpoint, "ray_checkpoint": ray_checkpoint,
                       "best_epoch": int(best["best/epoch"])}, "checkpoint.json")
    tracking.finish()


def _metric(key: str, value: float, step: int = 0):
    import time

    from mlflow.entities import Metric

    return Metric(key, value, int(time.time() * 1000), step)


def log_report(tracking: TrainTracking | None, report_dir: str | Path) -> None:
    """The evaluate outputs (report.md/.json, the plot, exit_profile.json) as artifacts of
    the training run, under ``report/``; test metrics as ``test/<exit>/uar``."""
    if tracking is None:
        return
    report_dir = Path(report_dir)
    for name in ("report.md", "report.json", "accuracy_latency.png", "exit_profile.json"):
        if (report_dir / name).exists():
            tracking.log_artifact(report_dir / name, "report")
    path = report_dir / "report.json"
    if path.exists():
        report = json.loads(path.read_text())
        metrics = {}
        for name, e in report.get("exits", {}).items():
            for key in ("uar", "wa", "macro_f1", "latency_ms_p50"):
                if isinstance(e.get(key), (int, float)):
                    metrics[f"test/{name}/{key}"] = float(e[key])
        if metrics:
            tracking.client().log_batch(tracking.run_id, metrics=[_metric(k, v) for k, v in metrics.items()])


def tune_callbacks(uri: str | None, experiment: str) -> list:
    """Ray Tune's own MLflow integration: one MLflow run per trial."""
    if uri is None:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment, tags={"emodistill.kind": "tune-trial"})]


def log_sweep_summary(uri: str | None, experiment: str, out_dir: str, summary: dict) -> str | None:
    """The sweep's outputs (results.md/.csv, pareto.png, best/train.yaml) as artifacts of a
    ``<experiment>-summary`` run beside the trials; returns its run id."""
    if uri is None:
        return None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=f"{experiment}-summary", tags={"emodistill.kind": "tune-summary"})
    out = Path(out_dir)
    for name in ("results.md", "results.csv", "pareto.png", "best/train.yaml"):
        if (out / name).exists():
            client.log_artifact(run.info.run_id, str(out / name), str(Path(name).parent) if "/" in name else None)
    best = summary.get("best") or {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "best.json"
        path.write_text(json.dumps(best, indent=2, default=str))
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return run.info.run_id
