"""Ray Tune sweeps on a real local Ray cluster: every trial runs the same Ray Train
trainer as `emodistill train`, reports every objective, and the winner is exported as a
config that trains. An interrupted sweep resumes without re-running finished trials."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from emodistill.checkpoint import load_checkpoint
from emodistill.train.config import TrainConfig
from emodistill.tune.config import SweepConfig
from emodistill.evaluate.objectives import OBJECTIVES

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def write_configs(tmp_path, dataset, name, samples=3, epochs=1, scheduler="fifo", points=()) -> Path:
    train = yaml.safe_load((ROOT / "jobs/configs/demo_cpu.yaml").read_text())
    train["data"]["dataset"] = dataset
    train["optim"].update(epochs=epochs, batch_size=6)
    train["scaling"].update(num_workers=1, cpus_per_worker=1)
    train["run"].update(storage_path=str(tmp_path / "unused"), export_dir=None)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    sweep = {
        "train_config": str(tmp_path / "train.yaml"),
        "search": {
            "loss.kd_weight": {"kind": "uniform", "low": 0.0, "high": 2.0},
            "loss.temperature": {"kind": "choice", "values": [1.0, 4.0]},
        },
        "objective": "budget_uar",
        "latency_budget_ms": 1000.0,
        "latency_seconds": 1.0,
        "num_samples": samples,
        "points_to_evaluate": list(points),
        "scheduler": scheduler,
        "name": name,
        "storage_path": str(tmp_path / "ray"),
        "out_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_sweep_reports_every_objective_and_exports_a_config_that_trains(ray_local, tiny_dataset, tmp_path):
    from emodistill.train.driver import fit
    from emodistill.tune.sweep import run_sweep

    paper = {"loss.kd_weight": 1.0, "loss.temperature": 1.0}
    cfg = SweepConfig.from_yaml(write_configs(tmp_path, tiny_dataset, "sweep", points=[paper]))
    summary = run_sweep(cfg)
    out = tmp_path / "out"
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and len({r["trial_id"] for r in rows}) == 3
    for r in rows:
        for column in ["loss.kd_weight", "loss.temperature", *OBJECTIVES]:
            assert r[column] != "", (column, r)
        assert 0.0 <= float(r["uar_latency_auc"]) <= 1.0
        assert float(r["budget_uar"]) == float(r["teacher_uar"])  # 1000 ms: every exit is within budget
    given = [r for r in rows if r["given"] == "True"]  # the reference point ran as one of the 3 trials
    assert [(float(r["loss.kd_weight"]), float(r["loss.temperature"])) for r in given] == [(1.0, 1.0)]
    objective = [float(r["budget_uar"]) for r in rows]
    assert objective == sorted(objective, reverse=True)
    header = re.search(r"^\|\s*trial_id\s*\|.*$", (out / "results.md").read_text(), re.M)
    assert header and "loss.kd_weight" in header.group(0) and "uar_latency_auc" in header.group(0)
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["best"]["trial_id"] == rows[0]["trial_id"]
    # MLflow (Ray's MLflowLoggerCallback): one run per trial with its config and every
    # report, and the sweep's outputs as artifacts of a summary run
    from mlflow import MlflowClient

    assert summary["tracking_uri"] == (tmp_path / "ray" / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    experiment = client.get_experiment_by_name("sweep")
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get("emodistill.kind") == "tune-trial"]
    assert len(trials) == 3
    for run in trials:
        assert {"budget_uar", "uar_latency_auc", "teacher_uar"} <= set(run.data.metrics), sorted(run.data.metrics)
        assert any(k.startswith("val/exit_") and k.endswith("/uar") for k in run.data.metrics)
        assert any(k.endswith("loss.kd_weight") for k in run.data.params), sorted(run.data.params)[:20]
    (summary_run,) = [r for r in runs if r.data.tags.get("emodistill.kind") == "tune-summary"]
    artifacts = {a.path for a in client.list_artifacts(summary_run.info.run_id)}
    assert {"results.md", "results.csv", "pareto.png", "best.json"} <= artifacts, artifacts
    # the winning trial as a config `emodistill train` accepts, and its checkpoint
    best = TrainConfig.from_yaml(
        out / "best/train.yaml", [f"run.storage_path={tmp_path / 'retrain'}", f"run.export_dir={tmp_path / 'retrained'}"]
    )
    assert best.loss.kd_weight == pytest.approx(float(rows[0]["loss.kd_weight"]))
    assert best.loss.temperature == float(rows[0]["loss.temperature"])
    assert load_checkpoint(out / "best/checkpoint").model.exit_names == ["exit_1", "exit_3", "exit_5", "exit_7"]
    result = fit(best, progress=False)
    assert load_checkpoint(result.best_checkpoint).model.labels == ["angry", "happy", "sad"]


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tiny_dataset, tmp_path):
    """`emodistill tune` in its own process is killed once a trial has finished; the
    restored sweep completes the rest and leaves the finished trial's results alone."""
    path = write_configs(tmp_path, tiny_dataset, "interrupted", samples=3)
    exe = Path(sys.executable).with_name("emodistill")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local cluster
    proc = subprocess.Popen([str(exe), "tune", "--config", str(path)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    exp = tmp_path / "ray" / "interrupted"

    def finished() -> dict[str, tuple[int, int]]:
        """Trials the sweep's saved state marks TERMINATED -> (results, params.json mtime):
        Tune rewrites a trial's params.json whenever it starts that trial."""
        from ray.tune import ExperimentAnalysis

        try:
            trials = ExperimentAnalysis(str(exp)).trials
        except Exception:  # no experiment state written yet
            return {}
        done = {}
        for trial in trials:
            if trial.status == "TERMINATED":
                (trial_dir,) = exp.glob(f"*_{trial.trial_id}_*")
                lines = len((trial_dir / "result.json").read_text().splitlines())
                done[trial.trial_id] = (lines, (trial_dir / "params.json").stat().st_mtime_ns)
        return done

    deadline = time.time() + 300
    try:
        while not finished() and time.time() < deadline:
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.5)
        first = finished()
        assert first, "no trial finished in time"
        assert len(first) < 3, "every trial finished before the interruption"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started
        proc.wait()

    restore = subprocess.run(
        [str(exe), "tune", "--config", str(path), "--resume"], env=env, capture_output=True, text=True, timeout=600
    )
    assert restore.returncode == 0, restore.stderr[-3000:]
    done = finished()
    assert len(done) == 3, done
    for trial_id, fingerprint in first.items():
        assert done[trial_id] == fingerprint, f"{trial_id} ran again"
    assert all(lines == 1 for lines, _ in done.values()), done  # one epoch, one result each
    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 3
