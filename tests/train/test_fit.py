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
import yaml

from emodistill.checkpoint import load_checkpoint, read_checkpoint_config
from emodistill.data.schema import read_info
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


def test_train_with_the_default_metric_end_to_end(ray_local, tiny_dataset, tmp_path):
    """`emodistill train` on a config that leaves run.checkpoint_metric at its default: the
    default used to be a name no run reported, so every checkpoint scored -inf, the
    exported "best" was arbitrary and the command ended in a KeyError."""
    from typer.testing import CliRunner

    from emodistill.cli.main import app

    raw = yaml.safe_load((ROOT / "jobs/configs/demo_cpu.yaml").read_text())
    del raw["run"]["checkpoint_metric"]
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    run = CliRunner().invoke(app, [
        "train", "--config", str(path), f"data.dataset={tiny_dataset}", f"run.storage_path={tmp_path / 'ray'}",
        f"run.export_dir={tmp_path / 'sd'}", "optim.epochs=2", "optim.batch_size=6",
    ])
    assert run.exception is None, run.output
    assert "val/teacher_uar = " in run.output and f"emodistill evaluate {tmp_path / 'sd'}" in run.output
    meta = load_checkpoint(tmp_path / "sd").config.training
    kept = [read_checkpoint_config(p.parent).training for p in (tmp_path / "ray" / "demo").glob("checkpoint_*/config.json")]
    history = max(kept, key=lambda t: t.epoch).history  # the last epoch's checkpoint (Ray keeps it) has them all
    assert [h["epoch"] for h in history] == [0, 1] and history[-1]["train/loss/total"] < history[0]["train/loss/total"]
    best = max(history, key=lambda h: (h["val/teacher_uar"], h["epoch"]))
    assert meta.epoch == best["epoch"], "the exported checkpoint is the best by the default metric"
    m = meta.metrics
    for name in ["exit_1", "exit_3", "exit_5", "exit_7"]:
        for key in ["uar", "wa", "macro_f1"]:
            assert 0.0 <= m[f"val/{name}/{key}"] <= 1.0
    for term in ["total", "teacher_ce", "exit_ce", "kd", "feature"]:
        assert f"train/loss/{term}" in m and f"val/loss/{term}" in m
    sel = meta.selection
    assert sel.test.folds == [2] and sel.train.folds == [0, 1]
    val, train, test = (set(sel.speakers[k]) for k in ("val", "train", "test"))
    assert len(val) == 1 and not (val & train) and not (val & test), "selection never sees test speakers"
    assert m["val/rows"] == 12, "every clip of the selection speaker, once"
    assert load_checkpoint(tmp_path / "sd").model.exit_names == ["exit_1", "exit_3", "exit_5", "exit_7"]
    assert not (tmp_path / "sd" / "train_state.pt").exists(), "the export holds no optimiser state"


def test_baselines_are_one_flag_away(ray_local, tiny_dataset, tmp_path):
    plain = fit(config(tiny_dataset, tmp_path, "plain", "model.exits=[]", "optim.epochs=1"))
    assert not any(k.startswith("val/exit_1") for k in plain.best_metrics)
    assert "val/exit_7/uar" in plain.best_metrics and plain.best_metrics["train/loss/kd"] == 0
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


def test_cross_validation_tests_each_fold_once_against_the_egemaps_floor(ray_local, tiny_dataset, tmp_path):
    """`--folds all`: test UAR per exit (selected and last epoch) mean ± sd over folds, the
    eGeMAPS floor on the same speakers, and per fold who selected and who tested."""
    from typer.testing import CliRunner

    from emodistill.cli.main import app

    run = CliRunner().invoke(app, [
        "train", "--config", str(ROOT / "jobs/configs/demo_cpu.yaml"), "--folds", "all", f"data.dataset={tiny_dataset}",
        f"run.storage_path={tmp_path / 'ray'}", f"run.export_dir={tmp_path / 'cv'}", "run.name=cv", "optim.epochs=1",
        "optim.batch_size=6", "model.exits=[2]",
    ])
    assert run.exception is None, run.output
    assert "| egemaps_logreg |" in run.output and " ± " in run.output
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved["folds"] == [0, 1, 2]
    for name in ["exit_2", "exit_7"]:
        row = saved["exits"][name]["test_uar"]
        assert len(row["folds"]) == 3 and row["mean"] == pytest.approx(sum(row["folds"]) / 3) and row["sd"] >= 0
        assert len(saved["exits"][name]["test_uar_last_epoch"]["folds"]) == 3
    assert len(saved["baseline"]["folds"]) == 3 and 0 <= saved["baseline"]["mean"] <= 1
    tested = []
    for r in saved["runs"]:
        assert not set(r["speakers"]["val"]) & set(r["speakers"]["test"]), "selection never sees the test fold"
        tested += r["speakers"]["test"]
    assert sorted(tested) == sorted(read_info(tiny_dataset).speaker_folds), "every speaker tested exactly once"
    for fold, path in saved["checkpoints"].items():
        assert load_checkpoint(path).config.training.selection.test.folds == [int(fold)]
    assert "test speakers" in (tmp_path / "cv" / "cv.md").read_text()
