"""`emodistill evaluate` on a real checkpoint and dataset: every output file, right content."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emodistill.checkpoint import save_checkpoint
from emodistill.data.schema import read_info
from emodistill.evaluate.report import EvaluateConfig, evaluate
from emodistill.exits import exit_block


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset, tmp_path_factory):
    info = read_info(tiny_dataset)
    torch.manual_seed(0)
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    model = build_model(ModelConfig(backbone=BackboneConfig(arch="tiny"), exits=[1, 2, 3]), info.labels)
    path = tmp_path_factory.mktemp("run") / "checkpoint"
    save_checkpoint(model, path, metadata={"train_folds": [0, 1], "val_folds": [2], "dataset": tiny_dataset})
    return str(path)


def test_report_files_and_contents(tiny_dataset, checkpoint):
    report = evaluate(EvaluateConfig(checkpoint=checkpoint, dataset=tiny_dataset, repeats=3, latency_seconds=[1.0, 2.0]))
    out = Path(checkpoint).parent / "report"
    assert report["out"] == str(out)
    for name in ["report.json", "report.md", "accuracy_latency.png", "exit_profile.json"]:
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "report.json").read_text())
    assert saved["num_classes"] == 3 and saved["labels"] == ["angry", "happy", "sad"]
    assert saved["train"]["part"] == "folds [0, 1]" and saved["eval"]["folds"] == [2]
    assert saved["eval"]["clips"] == sum(read_info(tiny_dataset).counts_by_fold["2"].values())
    assert saved["eval"]["selected_on_these_speakers"] == saved["eval"]["speakers"], "an old checkpoint: flagged"
    assert "optimistic" in (out / "report.md").read_text()
    base = saved["baseline"]
    assert base["name"] == "egemaps_logreg" and 0 <= base["uar"] <= 1 and base["latency_ms_p50"] > 0
    assert base["train_clips"] == 48 and base["test_clips"] == saved["eval"]["clips"]
    assert "| egemaps_logreg |" in (out / "report.md").read_text()
    assert set(saved["objectives"]) == {"teacher_uar", "mean_exit_uar", "budget_uar", "uar_latency_auc"}
    for name, e in saved["exits"].items():
        assert e["block"] == exit_block(name)
        assert 0 <= e["uar"] <= 1 and 0 <= e["wa"] <= 1 and 0 <= e["macro_f1"] <= 1
        assert 0 < e["latency_ms_p50"] <= e["latency_ms_p95"]
        assert sum(map(sum, e["confusion"])) == saved["eval"]["clips"]
    assert set(saved["policies"]) == {"fusion", "early_exit_margin", "early_exit_entropy"}
    sweep = saved["policies"]["early_exit_margin"]
    assert sweep[0]["mean_block"] == 1.0, "threshold 0: every clip leaves at the first exit"
    assert sweep[-1]["mean_block"] == 4.0, "threshold 1: nothing is that sure, every clip goes deepest"
    profile = json.loads((out / "exit_profile.json").read_text())
    assert set(profile["exits"]) == {"exit_1", "exit_2", "exit_3", "exit_4"}
    assert set(profile["exits"]["exit_2"]["latency_ms"]) == {"1", "2"}
    assert profile["model"]["version"] and profile["labels"] == ["angry", "happy", "sad"]
    assert (out / "accuracy_latency.png").read_bytes()[:4] == b"\x89PNG"
    assert "| exit_1 |" in (out / "report.md").read_text()


def test_cli_evaluate_with_explicit_folds(tiny_dataset, checkpoint, tmp_path):
    exe = Path(sys.executable).with_name("emodistill")
    run = subprocess.run(
        [str(exe), "evaluate", checkpoint, tiny_dataset, "--folds", "0,1", "--out", str(tmp_path), "--repeats", "2",
         "--latency-seconds", "1", "--no-baseline", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["eval"]["folds"] == [0, 1]
    bad = subprocess.run([str(exe), "evaluate", checkpoint, tiny_dataset, "--folds", "9"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no folds [9]" in bad.stderr
    missing = subprocess.run([str(exe), "evaluate", str(tmp_path / "nope"), tiny_dataset], capture_output=True, text=True)
    assert missing.returncode == 2 and "no checkpoint at" in missing.stderr


def test_evaluate_prepares_clips_as_the_checkpoint_validated(tiny_dataset, tmp_path):
    """The paper's config validates on fixed 5.984 s windows; evaluate used full clips."""
    from emodistill.checkpoint import Preprocessing
    from emodistill.data.batching import BatchOptions
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    info = read_info(tiny_dataset)
    model = build_model(ModelConfig(backbone=BackboneConfig(arch="tiny"), exits=[2], student_head="mean"), info.labels)
    path = save_checkpoint(
        model, tmp_path / "ckpt", metadata={"train_folds": [0, 1], "val_folds": [2]},
        preprocessing=Preprocessing(val_batch=BatchOptions(mode="fixed", fixed_samples=24000)),
    )
    fixed = evaluate(EvaluateConfig(checkpoint=path, dataset=tiny_dataset, repeats=1, warmup=0, latency_seconds=[1.5],
                                    baseline=False, out=str(tmp_path / "a")))
    assert fixed["eval"]["preprocessing"]["mode"] == "fixed" and fixed["eval"]["median_seconds"] == 1.5
    full = evaluate(EvaluateConfig(checkpoint=path, dataset=tiny_dataset, repeats=1, warmup=0, latency_seconds=[1.5],
                                   baseline=False, preprocessing="full", out=str(tmp_path / "b")))
    assert full["eval"]["preprocessing"]["mode"] == "full" and full["eval"]["median_seconds"] < 1.5


def test_policy_latency_is_the_path_the_cascade_runs(monkeypatch):
    """A clip that stops at exit k has run the heads of every exit before k too; the curves
    used the cut model of exit k alone (a GRU head costs as much as two blocks). Checked by
    which heads each timed path runs (no timing in a test): a stand-in clock charges 1 ms
    per head run, and the curves must carry exactly those costs."""
    import numpy as np

    from conftest import tiny_model
    from emodistill.evaluate import report

    model = tiny_model(student_head="mean")
    calls: list[str] = []
    for name in model.exit_names:
        model.heads[name].register_forward_hook(lambda *_, n=name: calls.append(n))
    ran: dict[str, list[str]] = {}

    def heads_run(fns, warmup, repeats, device=None):  # time_interleaved's signature (device: CUDA sync)
        for key, fn in fns.items():
            calls.clear()
            fn()
            ran[key] = sorted(set(calls))
        return {k: {"latency_ms_p50": float(len(v)), "latency_ms_p95": float(len(v))} for k, v in ran.items()}

    monkeypatch.setattr(report, "time_interleaved", heads_run)
    paths = report.profile_policies(model, seconds=0.5, repeats=1, warmup=0)
    names = model.exit_names  # exit_1 .. exit_4 (the teacher)
    for i, name in enumerate(names):
        assert ran[f"cascade:{name}"] == names[: i + 1], "a cascade stopping here ran every head on the way"
    assert ran["fusion"] == names[:-1], "fusion runs every student head"
    assert paths["cascade:exit_4"]["p50"] == 4 and paths["fusion"]["p50"] == 3
    logits = {n: np.random.default_rng(i).normal(size=(6, 3)) for i, n in enumerate(names)}
    curves = report.policy_curves(logits, np.arange(6) % 3, 3, names, paths, thresholds=3)
    deepest = curves["early_exit_margin"][-1]  # threshold 1: every clip goes all the way
    assert deepest["mean_block"] == 4.0 and deepest["mean_latency_ms"] == pytest.approx(4.0)
    assert curves["fusion"]["mean_latency_ms"] == pytest.approx(3.0)
