"""`emodistill demo` end to end in a reduced form (a 48-clip corpus, one epoch, a free
port): what a person reads is our own lines only -- no Ray log lines, no "ERROR" --
Ray's output is in the run's log file, and the training run is read back from MLflow
with its params, per-exit metrics per epoch, the report, the plot and the checkpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_ports

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

RAY_NOISE = [
    r"\(pid=", r"pid=\d+\)", r"\(raylet\)", r"raylet", r"\bINFO\b", r"\bWARNING\b", r"\bERROR\b", r"\bError\b",
    r"Dataset \w+ execution", r"core_worker", r"Traceback", r"DeprecationWarning", r"Progress bars disabled",
    r"token", r"Serve", r"autoscaler",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "run"
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    exe = Path(sys.executable).with_name("emodistill")
    result = subprocess.run(
        [str(exe), "demo", "--root", str(root), "--port", str(port), "--speakers", "4", "--utterances", "3",
         "optim.epochs=2", "optim.batch_size=6"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    return root, result


def test_the_demo_shows_our_own_lines_only(demo):
    root, result = demo
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # progress bars of synth/ingest redraw with \r; every finished line is what was read
    lines = [part for line in output.splitlines() for part in line.split("\r") if part.strip()]
    noisy = [line for line in lines if any(re.search(p, line) for p in RAY_NOISE)]
    assert not noisy, "\n".join(noisy[:20])
    text = "\n".join(lines)
    for expected in ["[3/5] self-distillation", "epoch 1/2: loss", "epoch 2/2: loss", "Done in",
                     "| exit_7 ", "| realtime ", "serve run serve_configs/local.yaml", "mlruns/"]:
        assert expected in text, expected
    assert re.search(r"epoch 2/2: .*val UAR exit_1 [\d.]+ exit_3 [\d.]+ exit_5 [\d.]+ exit_7 [\d.]+", text)
    # Ray's output went to the run's log file instead
    log = (root / "ray.log").read_text()
    assert re.search(r"pid=\d+", log) and "Dataset" in log


def test_the_training_run_reads_back_from_mlflow(demo):
    from mlflow import MlflowClient

    root, result = demo
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    client = MlflowClient(tracking_uri=(root / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("demo")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["optim.epochs"] == "2" and params["model.exits"] == "[1, 3, 5]"
    assert "loss.kd_weight" in params and params["data.dataset"] == str(root / "data")
    for name in ["exit_1", "exit_3", "exit_5", "exit_7"]:
        history = client.get_metric_history(run.info.run_id, f"val/{name}/uar")
        assert sorted(m.step for m in history) == [1, 2], (name, history)
        assert f"test/{name}/uar" in run.data.metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss/total")] == [1, 2]
    assert 1 <= run.data.metrics["best/epoch"] <= 2
    assert run.data.tags["emodistill.checkpoint"] == str(root / "checkpoint")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoint.json", "report"} <= artifacts
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.md", "report/accuracy_latency.png", "report/exit_profile.json"} <= report
    local = client.download_artifacts(run.info.run_id, "checkpoint.json", str(root))
    assert json.loads(Path(local).read_text())["best_checkpoint"] == str(root / "checkpoint")
