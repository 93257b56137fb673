"""Ray Train end to end on a real local cluster: metrics, checkpoints, baselines, a killed worker."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from emodistill.checkpoint import load_checkpoint
from emodistill.train.config import TrainConfig
from emodistill.train.driver import fit

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def config(dataset, tmp_path, name, *overrides):
    return TrainConfig.from_yaml(
        ROOT / "jobs/configs/demo_cpu.yaml",
        [
            f"data.dataset={dataset}",
            f"run.storage_path={tmp_path / 'ray'}",
            f"run.export_dir={tmp_path / name}",
            f"run.name={name}",
            "optim.epochs=2",
            "optim.batch_size=6",
            *overrides,
        ],
    )


def test_fit_reports_every_exit_and_exports_a_checkpoint(ray_local, tiny_dataset, tmp_path):
    result = fit(config(tiny_dataset, tmp_path, "sd"))
    m = result.best_metrics
    for name in ["exit_1", "exit_2", "exit_3", "exit_4"]:
        for key in ["uar", "wa", "macro_f1"]:
            assert 0.0 <= m[f"val/{name}/{key}"] <= 1.0
    for term in ["total", "teacher_ce", "exit_ce", "kd", "feature"]:
        assert f"train/loss/{term}" in m and f"val/loss/{term}" in m
    assert m["val/rows"] == 24, "the whole held-out fold (2 speakers x 12 clips) is validated once"
    assert len(result.history) == 2 and [h["epoch"] for h in result.history] == [0, 1]
    assert result.history[-1]["train/loss/total"] < result.history[0]["train/loss/total"]
    ckpt = load_checkpoint(result.best_checkpoint)
    assert ckpt.model.exit_names == ["exit_1", "exit_2", "exit_3", "exit_4"]
    assert ckpt.config.metadata["val_folds"] == [2] and ckpt.config.metadata["train_folds"] == [0, 1]
    assert not (Path(result.best_checkpoint) / "train_state.pt").exists(), "the export holds no optimiser state"


def test_baselines_are_one_flag_away(ray_local, tiny_dataset, tmp_path):
    plain = fit(config(tiny_dataset, tmp_path, "plain", "model.exits=[]", "optim.epochs=1"))
    assert not any(k.startswith("val/exit_1") for k in plain.best_metrics)
    assert "val/exit_4/uar" in plain.best_metrics and plain.best_metrics["train/loss/kd"] == 0
    ce = fit(config(tiny_dataset, tmp_path, "ce", "loss.preset=ce_only", "optim.epochs=1"))
    assert ce.best_metrics["train/loss/kd"] == 0 and ce.best_metrics["train/loss/feature"] == 0
    assert ce.best_metrics["train/loss/exit_ce"] > 0 and "val/exit_1/uar" in ce.best_metrics
    assert ce.best_metrics["train/loss/total"] == pytest.approx(
        ce.best_metrics["train/loss/teacher_ce"] + ce.best_metrics["train/loss/exit_ce"], rel=1e-4
    )


def _train_worker_pids() -> list[int]:
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any("RayTrainWorker" in part for part in (proc.info["cmdline"] or [])):
            pids.append(proc.info["pid"])
    return pids


def _registered_checkpoints(run_dir: Path) -> list:
    try:
        return json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []


def test_killed_worker_resumes_from_its_last_checkpoint(ray_local, tiny_dataset, tmp_path):
    cfg = config(tiny_dataset, tmp_path, "ft", "optim.epochs=4", "run.max_failures=2", "run.keep_checkpoints=4")
    run_dir = tmp_path / "ray" / "ft"
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=fit(cfg)), daemon=True)
    thread.start()
    deadline = time.time() + 300
    while not _registered_checkpoints(run_dir):  # reported and committed, not just being written
        assert thread.is_alive() and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    pids = _train_worker_pids()
    assert pids, "training workers not found"
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=600)
    result = outcome["result"]
    history = result.history
    assert history[-1]["epoch"] == 3
    resumed = [h for h in history if h["resumed_from_epoch"] >= 0]
    assert resumed, "the run restarted from a checkpoint"
    first = resumed[0]
    assert first["epoch"] == first["resumed_from_epoch"] + 1, "continued after the checkpoint, not from scratch"
    assert pids[0] not in _train_worker_pids()


def test_cross_validation_reports_mean_and_std_per_exit(ray_local, tiny_dataset, tmp_path):
    from emodistill.train.cv import cross_validate

    cfg = config(tiny_dataset, tmp_path, "cv", "optim.epochs=1", "model.exits=[2]")
    summary = cross_validate(cfg)
    assert summary["folds"] == [0, 1, 2]
    for name in ["exit_2", "exit_4"]:
        row = summary["metrics"][f"val/{name}/uar"]
        assert len(row["folds"]) == 3 and row["mean"] == pytest.approx(sum(row["folds"]) / 3)
        assert row["std"] >= 0
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert set(saved["checkpoints"]) == {"0", "1", "2"}
    for fold, path in saved["checkpoints"].items():
        assert load_checkpoint(path).config.metadata["val_folds"] == [int(fold)]
