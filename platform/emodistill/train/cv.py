"""Cross-validation: the speaker-independent k-fold protocol, one Ray Train run per test fold.

For each fold f:

    test    fold f's speakers: evaluated only, after training, never seen by selection
    val     speakers carved (by seed) from the other folds: they choose the epoch
    train   the rest of the other folds: the network and the eGeMAPS floor train on them

Reported per exit: test UAR of the selected checkpoint and of the last epoch, mean ± sd
(sample sd) over folds; the eGeMAPS + logistic-regression floor on the same training and
test speakers; and, per fold, which speakers selected and which tested.
"""

from __future__ import annotations

import json

from emodistill.data.schema import read_info
from emodistill.evaluate.metrics import mean_sd
from emodistill.evaluate.report import baseline_report, score_checkpoint
from emodistill.evaluate.tables import markdown_table
from emodistill.exits import sort_exits
from emodistill.storage import get_fs, join, write_bytes_atomic
from emodistill.train.config import TrainConfig
from emodistill.train.driver import fit


def fold_config(cfg: TrainConfig, fold: int) -> TrainConfig:
    """The run of one test fold: val speakers carved from the other folds."""
    export = f"{cfg.run.export_dir.rstrip('/')}/fold{fold}" if cfg.run.export_dir else None
    return cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"test_folds": [fold], "val_folds": None, "train_folds": None}),
            "run": cfg.run.model_copy(update={"name": f"{cfg.run.name}-fold{fold}", "export_dir": export}),
        }
    )


def cross_validate(cfg: TrainConfig, folds: list[int] | None = None, progress: bool = True, baseline: bool = True) -> dict:
    """Train once per test fold; test UAR per exit (selected and last epoch), mean ± sd,
    against the eGeMAPS floor. Writes cv.json and cv.md (to run.export_dir, else beside
    the runs) and returns the same summary."""
    if cfg.data.train_splits is not None:
        raise ValueError("cross-validation uses folds; this config trains on splits")
    if cfg.data.val_folds is not None or cfg.data.test_folds is not None or cfg.data.train_folds is not None:
        raise ValueError(
            "cross-validation sets the folds itself (each fold tests once; validation speakers are carved from the "
            "others by data.val_fraction): remove data.val_folds / test_folds / train_folds"
        )
    info = read_info(cfg.data.dataset, cfg.data.s3)
    folds = folds if folds is not None else info.folds
    unknown = sorted(set(folds) - set(info.folds))
    if unknown:
        raise ValueError(f"{cfg.data.dataset}: no folds {unknown}; the dataset has folds {info.folds}")
    runs = []
    for fold in folds:
        fold_cfg = fold_config(cfg, fold)
        result = fit(fold_cfg, progress=progress)
        sel = result.plan.selection
        with result.best_ray_checkpoint.as_directory() as best_dir:
            best = score_checkpoint(best_dir, cfg.data.dataset, sel.test, s3=cfg.data.s3)
        with result.last_checkpoint.as_directory() as last_dir:
            last = score_checkpoint(last_dir, cfg.data.dataset, sel.test, s3=cfg.data.s3)
        run = {
            "fold": fold,
            "speakers": sel.speakers,
            "selected_epoch": int(result.best_metrics["epoch"]),
            "epochs": len(result.history),
            "selection_metric": cfg.run.checkpoint_metric,
            "selection_value": float(result.best_metrics[cfg.run.checkpoint_metric]),
            "val_uar": {n: float(result.best_metrics[f"val/{n}/uar"]) for n in best},
            "test_uar": {n: m["uar"] for n, m in best.items()},
            "test_uar_last_epoch": {n: m["uar"] for n, m in last.items()},
            "checkpoint": result.best_checkpoint,
        }
        if baseline:
            b = baseline_report(cfg.data.dataset, sel.train, sel.test, len(info.labels), s3=cfg.data.s3, seed=cfg.seed)
            run["baseline_uar"] = b["uar"]
        runs.append(run)
        if progress:
            print(f"fold {fold}: test UAR " + " ".join(f"{n}={u:.3f}" for n, u in run["test_uar"].items())
                  + (f"; eGeMAPS {run['baseline_uar']:.3f}" if baseline else ""), flush=True)
    summary = summarise(cfg, runs)
    out = cfg.run.export_dir or join(cfg.run.storage_path, f"{cfg.run.name}-cv")
    fs, root = get_fs(out, cfg.data.s3)
    fs.makedirs(root, exist_ok=True)
    write_bytes_atomic(fs, join(root, "cv.json"), json.dumps(summary, indent=2).encode())
    write_bytes_atomic(fs, join(root, "cv.md"), cv_markdown(summary).encode())
    summary["out"] = out
    return summary


def summarise(cfg: TrainConfig, runs: list[dict]) -> dict:
    """Mean ± sd over folds of every exit's test UAR (selected, last epoch) and the floor's."""
    exits = sort_exits(runs[0]["test_uar"])
    table = {}
    for n in exits:
        row = {}
        for key in ("test_uar", "test_uar_last_epoch", "val_uar"):
            mean, sd = mean_sd([r[key][n] for r in runs])
            row[key] = {"mean": mean, "sd": sd, "folds": [r[key][n] for r in runs]}
        table[n] = row
    summary = {
        "dataset": cfg.data.dataset,
        "folds": [r["fold"] for r in runs],
        "selection": f"{cfg.run.checkpoint_metric} on speakers carved from the training folds "
        f"(val_fraction {cfg.data.val_fraction}, seed {cfg.seed})",
        "exits": table,
        "runs": runs,
        "checkpoints": {str(r["fold"]): r["checkpoint"] for r in runs},
    }
    if all("baseline_uar" in r for r in runs):
        mean, sd = mean_sd([r["baseline_uar"] for r in runs])
        summary["baseline"] = {"name": "egemaps_logreg", "mean": mean, "sd": sd, "folds": [r["baseline_uar"] for r in runs]}
    return summary


def _pm(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def cv_table(summary: dict) -> str:
    """Test UAR per exit (mean ± sd over folds) against the eGeMAPS floor."""
    rows = [[n, _pm(r["test_uar"]), _pm(r["test_uar_last_epoch"]), _pm(r["val_uar"])] for n, r in summary["exits"].items()]
    if "baseline" in summary:
        rows.append([summary["baseline"]["name"], _pm(summary["baseline"]), "-", "-"])
    return markdown_table(["exit", "test UAR (selected epoch)", "test UAR (last epoch)", "val UAR (selected)"], rows)


def fold_table(summary: dict) -> str:
    """Per fold: who tested, who selected, the chosen epoch, the teacher and the floor."""
    rows = []
    for r in summary["runs"]:
        teacher = sort_exits(r["test_uar"])[-1]
        rows.append([
            r["fold"], ", ".join(r["speakers"].get("test") or []), ", ".join(r["speakers"].get("val") or []),
            f"{r['selected_epoch'] + 1}/{r['epochs']}", r["test_uar"][teacher], r.get("baseline_uar", "-"),
        ])
    return markdown_table(["test fold", "test speakers", "selection speakers", "epoch", "teacher test UAR", "eGeMAPS"], rows)


def cv_markdown(summary: dict) -> str:
    n = len(summary["folds"])
    return "\n".join([
        f"# Cross-validation: {n} speaker-independent folds of `{summary['dataset']}`",
        "",
        f"Each fold is tested once; its checkpoint is selected by {summary['selection']}; test speakers never select.",
        "",
        cv_table(summary),
        "",
        fold_table(summary),
        "",
    ])
