"""`emodistill tune`: Ray Tune sweeps over the self-distillation loss weights.

The way current Ray documents Tune over Train v2: every trial is a driver function that
builds the same ``TorchTrainer`` as ``emodistill train`` (``build_trainer``) with the
trial's values and runs it; Tune's ``TuneReportCallback`` passes each epoch's report on.
Every report carries the four objectives (``emodistill.evaluate.objectives``), computed in the
workers from the validation UARs and the exit latencies the sweep measured once up front.

Outputs in ``out_dir``: ``results.csv`` / ``results.md`` (one row per trial at its best
epoch by the objective, sorted), ``pareto.png`` (every trial's exits as UAR against
latency, the Pareto front marked) and ``best/`` (``train.yaml`` that `emodistill train`
accepts, and the winning trial's checkpoint). An interrupted sweep resumes from its
storage (``Tuner.restore``) without re-running finished trials.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from emodistill import tracking
from emodistill.storage import get_fs, join, write_bytes_atomic
from emodistill.evaluate.tables import markdown_table
from emodistill.train.config import TrainConfig
from emodistill.tune.config import SweepConfig
from emodistill.evaluate.objectives import OBJECTIVES, exit_uars, pareto_front

TRIALS_DIR = "trials"


def latency_device(cfg: SweepConfig):
    """The :class:`DeviceInfo` the sweep's exit latencies hold for: the profile's device, or
    this driver's ``latency_device``. A profile whose device kind differs from an explicit
    ``latency_device`` is an error (the sweep would rank exits with foreign numbers)."""
    from emodistill.evaluate.latency import check_device
    from emodistill.exit_profile import DeviceInfo, read_profile

    if cfg.latency_profile:
        device = read_profile(cfg.latency_profile).device
        wanted = cfg.latency_device
        if wanted is not None and not wanted.strip().lower().startswith(device.kind):
            raise ValueError(
                f"latency_profile {cfg.latency_profile} was measured on {device.describe()}, not on "
                f"{wanted!r}: drop latency_profile to measure on {wanted!r}, or drop latency_device/--device"
            )
        return device
    return DeviceInfo.current(check_device(cfg.latency_device))


def measure_latencies(cfg: SweepConfig, base: TrainConfig, labels: list[str]) -> dict[str, float]:
    """p50 latency (ms, batch 1) of the cut model of every exit any trial may have: from
    ``latency_profile``, else measured here on ``latency_device``."""
    latency_device(cfg)  # checks the device (or the profile's) before any work
    if cfg.latency_profile:
        from emodistill.exit_profile import read_profile

        return read_profile(cfg.latency_profile).latency_at(cfg.latency_seconds, "p50")
    from emodistill.evaluate.latency import profile_exits
    from emodistill.model import build_model

    blocks = set(base.model.exits)
    if "model.exits" in cfg.search:
        for option in cfg.search["model.exits"].sample_values():
            blocks |= set(option)
    model = build_model(base.model.model_copy(update={"exits": sorted(blocks)}), labels)
    report = profile_exits(model, seconds=cfg.latency_seconds, warmup=2, repeats=10, device=cfg.latency_device or "cpu")
    return {name: e["latency_ms_p50"] for name, e in report["exits"].items()}


def trial_driver(config: dict) -> None:
    """One trial: the train config with this trial's values, run by its own TorchTrainer."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from emodistill.train.driver import build_trainer

    sweep = SweepConfig.model_validate(config["sweep"])
    trial_id = ray.tune.get_context().get_trial_id()
    cfg = sweep.trial_train_config(config["values"], config["train"])
    cfg = cfg.model_copy(
        update={
            "run": cfg.run.model_copy(
                update={
                    "name": trial_id,
                    "storage_path": join(config["storage"], TRIALS_DIR),
                    "export_dir": None,
                    "if_exists": "resume",  # a restored sweep continues an unfinished trial
                }
            )
        }
    )
    objectives = {"latency_ms": config["latency_ms"], "budget_ms": sweep.latency_budget_ms}
    build_trainer(
        cfg, progress=False, callbacks=[TuneReportCallback()], objectives=objectives, score=sweep.objective
    ).fit()


def _tuner(cfg: SweepConfig, train_raw: dict, latency_ms: dict[str, float], storage: str, restore: bool,
           tracking_uri: str | None = None):
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    # The driver only waits on its trainer, whose workers reserve the real resources. It
    # must hold no CPU at all: even 0.01 leaves a 2-CPU node with 0.99 free beside a
    # 1-CPU worker, and Ray Data's read tasks (1 CPU each) then never start. Tune refuses
    # an empty bundle, so the driver reserves a token amount of memory instead.
    trainable = ray.tune.with_resources(trial_driver, {"cpu": 0, "memory": 1 << 20})
    param_space = {
        "sweep": cfg.model_dump(mode="json"),
        "train": train_raw,
        "storage": storage,
        "latency_ms": latency_ms,
        "values": {k: d.to_tune(grid=cfg.search_alg == "grid") for k, d in cfg.search.items()},
    }
    path = join(storage, cfg.name)
    if restore:
        return ray.tune.Tuner.restore(path, trainable=trainable, param_space=param_space, resume_errored=True)
    epochs = TrainConfig.model_validate(train_raw).optim.epochs
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            max_t=epochs,
            grace_period=min(cfg.asha.grace_period, epochs),
            reduction_factor=cfg.asha.reduction_factor,
        )
        if cfg.scheduler == "asha"
        else FIFOScheduler()
    )
    return ray.tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=ray.tune.TuneConfig(
            metric=cfg.objective,
            mode="max",
            num_samples=cfg.num_samples,
            scheduler=scheduler,
            # the limit goes to the generator itself: Tune ignores max_concurrent_trials
            # next to a search-generator instance, and every trial would start at once
            search_alg=BasicVariantGenerator(
                points_to_evaluate=[{"values": point} for point in cfg.points_to_evaluate] or None,
                random_state=cfg.seed,
                max_concurrent=cfg.max_concurrent_trials,
            ),
        ),
        run_config=ray.tune.RunConfig(
            name=cfg.name, storage_path=storage, verbose=0,
            callbacks=[_trial_progress(cfg.objective, epochs), *tracking.tune_callbacks(tracking_uri, cfg.name)],
        ),
    )


def _trial_progress(objective: str, epochs: int):
    """A Tune callback printing one line per trial epoch and per finished trial (Tune's own
    tables are turned off with ``verbose=0``)."""
    from ray.tune import Callback

    class TrialProgress(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            print(
                f"trial {trial.trial_id} epoch {result['training_iteration']}/{epochs}: "
                + ", ".join(f"{k} {result[k]:.3f}" for k in OBJECTIVES if k in result)
                + ("" if objective in result else f" (no {objective})"),
                flush=True,
            )

        def on_trial_complete(self, iteration, trials, trial, **info):
            done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
            print(f"trial {trial.trial_id} finished ({done}/{len(trials)} trials done)", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"trial {trial.trial_id} failed: see {trial.local_path}/error.txt", flush=True)

    return TrialProgress()


def can_restore(cfg: SweepConfig) -> bool:
    import ray.tune

    return ray.tune.Tuner.can_restore(join(_storage(cfg), cfg.name))


def _storage(cfg: SweepConfig) -> str:
    return cfg.storage_path if "://" in cfg.storage_path else str(Path(cfg.storage_path).absolute())


def run_sweep(cfg: SweepConfig, resume: bool | None = None) -> dict:
    """Run (or, when its state exists and ``resume`` is not False, continue) the sweep;
    write the outputs; return the summary (rows sorted by the objective, best trial)."""
    from emodistill.cluster import init_ray
    from emodistill.data.schema import read_info

    base = cfg.check()
    labels = read_info(base.data.dataset, base.data.s3).labels
    init_ray()
    storage = _storage(cfg)
    restore = can_restore(cfg) if resume is None else resume
    if resume and not can_restore(cfg):
        raise FileNotFoundError(
            f"no sweep state to resume at {join(storage, cfg.name)}; run without --resume to start the sweep"
        )
    latency_ms = _saved_latencies(cfg, storage) if restore else None
    if latency_ms is None:
        latency_ms = measure_latencies(cfg, base, labels)
        fs, root = get_fs(join(storage, cfg.name))
        fs.makedirs(root, exist_ok=True)
        write_bytes_atomic(fs, join(root, "latency_ms.json"), json.dumps(latency_ms, indent=2).encode())
    uri = tracking.run_uri(cfg.storage_path)
    results = _tuner(cfg, cfg.base_train_raw(), latency_ms, storage, restore, uri).fit()
    summary = write_outputs(cfg, results, latency_ms)
    summary["tracking_uri"] = uri
    summary["tracking_run"] = tracking.log_sweep_summary(uri, cfg.name, cfg.out_dir, summary)
    return summary


def _saved_latencies(cfg: SweepConfig, storage: str) -> dict | None:
    fs, path = get_fs(join(storage, cfg.name, "latency_ms.json"))
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as fh:
        return json.loads(fh.read())


# ---- outputs ------------------------------------------------------------------------------
def trial_rows(cfg: SweepConfig, results, latency_ms: dict[str, float]) -> list[dict]:
    """One row per trial at its best epoch by the objective: trial_id, searched values,
    every objective, per-exit UARs, epochs run, checkpoint."""
    rows = []
    for result in results:
        df = result.metrics_dataframe
        if df is None or df.empty or cfg.objective not in df:
            continue
        best = pick_epoch(df.to_dict("records"), cfg.objective, checkpoint_exists)
        values = result.config["values"]
        row: dict[str, Any] = {"trial_id": result.metrics.get("trial_id", best.get("trial_id"))}
        row.update({k: values[k] for k in cfg.search})
        row["given"] = any(values == point for point in cfg.points_to_evaluate)  # a reference point
        row.update({k: float(best[k]) for k in OBJECTIVES})
        row["exit_uars"] = exit_uars(best, list(latency_ms))
        row["epochs_run"] = int(df["training_iteration"].max())
        row["best_epoch"] = int(best["epoch"]) + 1
        row["checkpoint"] = best.get("checkpoint_path")
        rows.append(row)
    rows.sort(key=lambda r: r[cfg.objective], reverse=True)
    return rows


def checkpoint_exists(path: str | None) -> bool:
    """A checkpoint directory Ray Train still holds (it deletes all but the best kept)."""
    if not isinstance(path, str) or not path:
        return False
    from emodistill.checkpoint import CONFIG_FILE

    fs, root = get_fs(path)
    return fs.exists(join(root, CONFIG_FILE))


def pick_epoch(records: list[dict], objective: str, exists=checkpoint_exists) -> dict:
    """The epoch of one trial to report and export: the best by ``objective`` whose
    checkpoint still exists. Epochs tie often (UAR moves in steps of 1/clips); Ray's
    checkpoint manager keeps the *later* of tied checkpoints and deletes the earlier with
    ``keep_checkpoints: 1``, so ties go to the later epoch, and an epoch whose checkpoint
    is gone is passed over for the next one with the same score or lower."""
    scored = [r for r in records if r.get(objective) is not None and r[objective] == r[objective]]  # drop NaN
    if not scored:
        raise ValueError(f"no epoch reported {objective}")
    ranked = sorted(scored, key=lambda r: (float(r[objective]), float(r.get("epoch", -1))), reverse=True)
    for r in ranked:
        if exists(r.get("checkpoint_path")):
            return r
    return {**ranked[0], "checkpoint_path": None}  # the metrics stand; there is no checkpoint to export


def write_outputs(cfg: SweepConfig, results, latency_ms: dict[str, float]) -> dict:
    from emodistill.train.driver import export_checkpoint

    rows = trial_rows(cfg, results, latency_ms)
    if not rows:
        errors = [str(err).strip().splitlines()[-1] for err in results.errors][:3]
        raise RuntimeError(
            f"no trial of sweep {cfg.name!r} reported {cfg.objective}"
            + (f"; trials failed with: {errors}" if errors else "")
            + f"; see the trials' error.txt under {join(_storage(cfg), cfg.name)}"
        )
    fs, out = get_fs(cfg.out_dir)
    fs.makedirs(out, exist_ok=True)
    columns = ["trial_id", *cfg.search, *OBJECTIVES, "epochs_run", "best_epoch", "given"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for r in rows:
        writer.writerow([json.dumps(r[c]) if isinstance(r[c], list) else r[c] for c in columns])
    write_bytes_atomic(fs, join(out, "results.csv"), buf.getvalue().encode())
    md = [
        f"# Sweep `{cfg.name}`: {len(rows)} trials, sorted by `{cfg.objective}`",
        "",
        f"Exit latencies (ms, batch 1, {cfg.latency_seconds:g} s clip, {latency_device(cfg).describe()}): "
        + ", ".join(f"{k} {v:.2f}" for k, v in latency_ms.items())
        + f"; `budget_uar` budget {cfg.latency_budget_ms:g} ms. `given`: a trial of `points_to_evaluate`"
        " (a reference such as the paper's all-ones weights), not a searched one.",
        "",
        markdown_table(columns, [[r[c] for c in columns] for r in rows]),
        "",
    ]
    write_bytes_atomic(fs, join(out, "results.md"), "\n".join(md).encode())
    write_bytes_atomic(fs, join(out, "pareto.png"), pareto_plot(rows, latency_ms, cfg))

    best = rows[0]
    train_cfg = cfg.trial_train_config({k: best[k] for k in cfg.search})
    train_cfg = train_cfg.model_copy(
        update={"run": train_cfg.run.model_copy(update={"name": f"{cfg.name}-best", "export_dir": None})}
    )
    write_bytes_atomic(fs, join(out, "best", "train.yaml"), _best_yaml(cfg, best, train_cfg).encode())
    checkpoint = None
    if best.get("checkpoint"):
        import ray.train

        checkpoint = export_checkpoint(ray.train.Checkpoint(best["checkpoint"]), join(out, "best", "checkpoint"))
    return {"rows": rows, "best": best, "best_checkpoint": checkpoint, "out": cfg.out_dir, "latency_ms": latency_ms}


def _best_yaml(cfg: SweepConfig, best: dict, train_cfg: TrainConfig) -> str:
    header = (
        f"# The best trial ({best['trial_id']}) of sweep {cfg.name!r} by {cfg.objective} = {best[cfg.objective]:.4f}.\n"
        "# Train it again: emodistill train --config THIS_FILE\n"
    )
    return header + yaml.safe_dump(train_cfg.model_dump(mode="json"), sort_keys=False)


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def pareto_plot(rows: list[dict], latency_ms: dict[str, float], cfg: SweepConfig) -> bytes:
    """Every trial's exits as (latency, UAR); the Pareto front over all of them marked."""
    from emodistill.evaluate.plots import axes, png

    points = []
    fig, ax = axes()
    for i, r in enumerate(rows):
        xs = [latency_ms[n] for n in r["exit_uars"]]
        ys = list(r["exit_uars"].values())
        label = f"{r['trial_id']} (best)" if i == 0 else None
        if r["given"]:
            label = f"{r['trial_id']} (given{', best' if i == 0 else ''}: " + ", ".join(
                f"{k.split('.')[-1]} {_short(r[k])}" for k in cfg.search) + ")"
        ax.plot(xs, ys, "o-" if not r["given"] else "s--", alpha=0.35 if i and not r["given"] else 0.9,
                lw=2.0 if i == 0 else 1.0, label=label)
        points += list(zip(xs, ys))
    front = sorted(pareto_front(points), key=lambda i: points[i][0])
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", lw=1.2, label="Pareto front")
    ax.scatter([points[i][0] for i in front], [points[i][1] for i in front], s=70, facecolors="none", edgecolors="k")
    ax.axvline(cfg.latency_budget_ms, color="tab:red", lw=0.8, ls=":", label=f"budget {cfg.latency_budget_ms:g} ms")
    ax.set_xlabel(f"latency of the cut model, ms (batch 1, {cfg.latency_seconds:g} s clip)")
    ax.set_ylabel("validation UAR")
    ax.set_title(f"Sweep {cfg.name}: {len(rows)} trials, every exit")
    return png(fig, ax)
