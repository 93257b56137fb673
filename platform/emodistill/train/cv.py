"""Cross-validation: the speaker-independent k-fold protocol, one Ray Train run per fold."""

from __future__ import annotations

import json

import numpy as np

from emodistill.data.schema import read_info
from emodistill.storage import get_fs, join, write_bytes_atomic
from emodistill.train.config import TrainConfig
from emodistill.train.loop import TrainResult, fit


def cross_validate(cfg: TrainConfig, folds: list[int] | None = None) -> dict:
    """Train once per held-out fold; mean and std of every validation metric per exit."""
    info = read_info(cfg.data.dataset, cfg.data.s3)
    folds = folds if folds is not None else info.folds
    if cfg.data.train_splits is not None:
        raise ValueError("cross-validation uses folds; this config trains on splits")
    results: dict[int, TrainResult] = {}
    for fold in folds:
        export = f"{cfg.run.export_dir.rstrip('/')}/fold{fold}" if cfg.run.export_dir else None
        fold_cfg = cfg.model_copy(
            update={
                "data": cfg.data.model_copy(update={"val_folds": [fold], "train_folds": None}),
                "run": cfg.run.model_copy(update={"name": f"{cfg.run.name}-fold{fold}", "export_dir": export}),
            }
        )
        results[fold] = fit(fold_cfg)
    keys = sorted({k for r in results.values() for k in r.best_metrics if k.startswith("val/") and k != "val/rows"})
    table = {}
    for key in keys:
        values = [float(r.best_metrics[key]) for r in results.values() if key in r.best_metrics]
        table[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "folds": values}
    summary = {
        "folds": folds,
        "metrics": table,
        "checkpoints": {str(f): r.best_checkpoint for f, r in results.items()},
    }
    if cfg.run.export_dir:
        fs, root = get_fs(cfg.run.export_dir, cfg.data.s3)
        write_bytes_atomic(fs, join(root, "cv.json"), json.dumps(summary, indent=2).encode())
    return summary
