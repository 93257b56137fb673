"""Training configs: every shipped file validates; presets, overrides and --dry-run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emodistill.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "jobs" / "configs").glob("*.yaml"))
TRAIN_CONFIGS = [p for p in CONFIGS if not p.name.startswith("tune")]


def test_the_required_configs_ship():
    names = {p.name for p in CONFIGS}
    assert {"demo_cpu.yaml", "paper_demos.yaml", "wav2vec2_base_gpu.yaml"} <= names


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates(path):
    TrainConfig.from_yaml(path)


def test_paper_config_restates_the_paper():
    cfg = TrainConfig.from_yaml(ROOT / "jobs/configs/paper_demos.yaml")
    assert cfg.model.backbone.pretrained == "facebook/wav2vec2-base"
    assert cfg.model.exits == [3, 8, 10] and cfg.model.student_head == "gru" and cfg.model.teacher_head == "mean"
    assert (cfg.loss.kd_weight, cfg.loss.feature_weight, cfg.loss.temperature) == (1.0, 1.0, 1.0)
    assert cfg.loss.feature_level == "embedding" and cfg.loss.detach_teacher is False
    assert cfg.optim.optimizer == "adam" and cfg.optim.lr_backbone == cfg.optim.lr_heads == 3e-5
    assert cfg.optim.batch_size == 16 and cfg.optim.epochs == 20
    assert cfg.data.train_batch.mode == "fixed" and cfg.data.train_batch.fixed_samples == 95744


def test_loss_preset_with_changes():
    raw = yaml.safe_load((ROOT / "jobs/configs/demo_cpu.yaml").read_text())
    raw["loss"] = {"preset": "paper", "kd_weight": 0.5}
    cfg = TrainConfig.model_validate(raw)
    assert cfg.loss.kd_weight == 0.5 and cfg.loss.temperature == 1.0 and cfg.loss.detach_teacher is False
    raw["loss"] = {"preset": "nope"}
    with pytest.raises(ValueError, match="unknown loss preset"):
        TrainConfig.model_validate(raw)


def test_overrides_and_errors():
    path = ROOT / "jobs/configs/demo_cpu.yaml"
    cfg = TrainConfig.from_yaml(path, ["model.exits=[2]", "loss.preset=ce_only", "optim.epochs=1"])
    assert cfg.model.exits == [2] and cfg.loss.kd_weight == 0 and cfg.optim.epochs == 1
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig.from_yaml(path, ["optim.epochs=0"])
    with pytest.raises(ValueError, match="extra|not permitted"):
        TrainConfig.from_yaml(path, ["optim.epoch=3"])


def test_dry_run_prints_the_resolved_config_and_the_plan(tiny_dataset, tmp_path):
    exe = Path(sys.executable).with_name("emodistill")
    out = subprocess.run(
        [str(exe), "train", "--config", "jobs/configs/demo_cpu.yaml", "--dry-run", "optim.epochs=3", "loss.preset=paper",
         f"data.dataset={tiny_dataset}", f"run.storage_path={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)  # the plan lines are YAML comments
    assert resolved["optim"]["epochs"] == 3 and resolved["loss"]["temperature"] == 1.0
    assert "# test (evaluated only): folds [2]" in out.stdout
    assert "# val (selects the checkpoint): folds [0, 1], speakers" in out.stdout
    assert "exits exit_1, exit_3, exit_5, exit_7" in out.stdout
    bad = subprocess.run(
        [str(exe), "train", "--config", "jobs/configs/demo_cpu.yaml", "--dry-run", "optim.epoch=zero"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "optim.epoch: unknown key" in bad.stderr and "did you mean 'epochs'?" in bad.stderr
    assert "Traceback" not in bad.stderr


def _dry_run(*args):
    """`emodistill train --dry-run` in this process; the error it stops with, if any."""
    import tempfile

    from typer.testing import CliRunner

    from emodistill.cli.main import app

    storage = f"run.storage_path={tempfile.mkdtemp(prefix='dry-run-')}"  # never an earlier run of the same name
    result = CliRunner().invoke(app, ["train", "--config", str(ROOT / "jobs/configs/demo_cpu.yaml"), "--dry-run", storage, *args])
    return result.exception, result.output


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.exits=[2, 9]"], "model.exits [9] are deeper than the backbone's 7 blocks"),
        (["data.dataset=/nonexistent/data"], "no dataset at /nonexistent/data"),
        (["run.checkpoint_metric=val/teacher/uar"], "'val/teacher/uar' is not a metric a run reports"),
        (["run.checkpoint_metric=val/exit_6/uar"], "names exit_6, which this model does not have"),
        (["data.test_folds=[1]", "data.val_folds=[1]"], "folds [1] are in more than one of train, val and test"),
        (["data.test_folds=[5]"], "no folds [5]"),
        (["optim.mixed_precison=no"], "did you mean 'mixed_precision'?"),
    ],
)
def test_dry_run_catches_what_used_to_wait_for_ray(tiny_dataset, overrides, message):
    """Each of these once surfaced only after Ray started (or after the whole run)."""
    error, _ = _dry_run(f"data.dataset={tiny_dataset}", *overrides)
    assert error is not None and message in str(error), error


def test_dry_run_of_cross_validation_plans_every_fold(tiny_dataset):
    error, output = _dry_run(f"data.dataset={tiny_dataset}", "--folds", "all")
    assert error is None, error
    for fold in (0, 1, 2):
        assert f"# run demo-fold{fold}:" in output and f"# test (evaluated only): folds [{fold}]" in output


def test_yaml_no_stays_a_string(tmp_path):
    """YAML 1.1 reads `no` as false; the configs are YAML 1.2 (only true/false are booleans)."""
    raw = yaml.safe_load((ROOT / "jobs/configs/demo_cpu.yaml").read_text())
    text = yaml.safe_dump(raw).replace("optimizer: adamw", "optimizer: adamw\n  mixed_precision: no")
    (tmp_path / "c.yaml").write_text(text)
    assert "mixed_precision: no\n" in text
    assert TrainConfig.from_yaml(tmp_path / "c.yaml").optim.mixed_precision == "no"
    assert TrainConfig.from_yaml(ROOT / "jobs/configs/demo_cpu.yaml", ["optim.mixed_precision=no"]).optim.mixed_precision == "no"
    assert TrainConfig.from_yaml(ROOT / "jobs/configs/demo_cpu.yaml", ["scaling.use_gpu=false"]).scaling.use_gpu is False


def test_the_default_checkpoint_metric_is_one_a_run_reports():
    """The default was `val/teacher/uar` while runs report `val/teacher_uar`: every
    checkpoint scored -inf and `emodistill train` ended in a KeyError."""
    import numpy as np

    from emodistill.evaluate.metrics import merge_validation, metric_mode

    default = TrainConfig.model_validate({"data": {"dataset": "x"}}).run.checkpoint_metric
    logits = {"exit_2": np.eye(3)[[0, 1, 2, 0]], "exit_4": np.eye(3)[[0, 1, 1, 0]]}
    part = (logits, np.array([0, 1, 2, 0]), {"total": 4.0, "kd": 1.0, "exit_2/ce": 2.0}, 4)
    reported = merge_validation([part, ({}, np.zeros(0, np.int64), {}, 0)], 3)
    assert default in reported and reported[default] == pytest.approx(2 / 3)
    assert reported["val/rows"] == 4
    for name in reported:
        if name != "val/rows":
            metric_mode(name, ["exit_2", "exit_4"])  # every reported name is one a config may choose
    assert metric_mode("val/loss/total") == "min" and metric_mode("val/exit_2/uar") == "max"
    with pytest.raises(ValueError, match="not a metric a run reports"):
        TrainConfig.model_validate({"data": {"dataset": "x"}, "run": {"checkpoint_metric": "val/teacher/uar"}})


def test_checkpoints_rank_the_way_their_metric_improves():
    """`checkpoint_score_order` was always max: a loss metric kept its worst checkpoints."""
    from emodistill.train.driver import best_of

    kept = [("a", {"epoch": 0, "val/loss/total": 0.9, "val/teacher_uar": 0.5}),
            ("b", {"epoch": 1, "val/loss/total": 0.4, "val/teacher_uar": 0.5}),
            ("c", {"epoch": 2, "val/loss/total": 0.7, "val/teacher_uar": 0.4})]
    assert best_of(kept, "val/loss/total", "min")[0] == "b"
    assert best_of(kept, "val/teacher_uar", "max")[0] == "b", "a tie goes to the later epoch, the one Ray keeps"
    with pytest.raises(ValueError, match="no checkpoint reported"):
        best_of(kept, "val/exit_1/uar", "max")


@pytest.mark.slow
def test_the_trainer_orders_checkpoints_by_the_metric(ray_local, tiny_dataset, tmp_path):
    from emodistill.train.driver import build_trainer

    cfg = TrainConfig.from_yaml(
        ROOT / "jobs/configs/demo_cpu.yaml",
        [f"data.dataset={tiny_dataset}", f"run.storage_path={tmp_path}", "run.checkpoint_metric=val/loss/total"],
    )
    checkpoints = build_trainer(cfg, progress=False).run_config.checkpoint_config
    assert checkpoints.checkpoint_score_attribute == "val/loss/total" and checkpoints.checkpoint_score_order == "min"


def test_an_earlier_run_of_the_same_name_is_never_taken_silently(tmp_path):
    """Ray Train resumes (or returns) a run found at storage/name; a new run on changed
    data must not inherit it by accident."""
    from emodistill.train.driver import prepare_run_dir

    def cfg(mode):
        return TrainConfig.model_validate(
            {"data": {"dataset": str(tmp_path / "data")}, "run": {"name": "r", "storage_path": str(tmp_path), "if_exists": mode}}
        )

    prepare_run_dir(cfg("error"), str(tmp_path))  # nothing there yet: fine
    earlier = tmp_path / "r"
    earlier.mkdir()
    (earlier / "checkpoint_manager_snapshot.json").write_text("{}")
    with pytest.raises(FileExistsError, match="run.if_exists=resume"):
        prepare_run_dir(cfg("error"), str(tmp_path))
    prepare_run_dir(cfg("resume"), str(tmp_path))
    assert earlier.exists()
    prepare_run_dir(cfg("overwrite"), str(tmp_path))
    assert not earlier.exists()


def test_dry_run_refuses_to_take_an_earlier_run_silently(tiny_dataset, tmp_path):
    (tmp_path / "demo").mkdir()
    error, _ = _dry_run(f"data.dataset={tiny_dataset}", f"run.storage_path={tmp_path}")
    assert isinstance(error, FileExistsError) and "run.if_exists=resume" in str(error)


def test_local_relative_paths_reach_the_workers_absolute(tmp_path, monkeypatch):
    """Ray Train workers run in another directory: `models/wav2vec2-base` typed in the
    user's folder must not turn into a Hub id there (a hub id stays one)."""
    from emodistill.train.driver import with_absolute_local_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "wav2vec2-base").mkdir(parents=True)
    cfg = TrainConfig.from_yaml(ROOT / "jobs/configs/own_corpus_cpu.yaml")
    fixed = with_absolute_local_paths(cfg)
    assert fixed.model.backbone.pretrained == str(tmp_path / "models" / "wav2vec2-base")
    assert fixed.data.dataset == str(tmp_path / "data" / "my_corpus")
    hub = cfg.model_copy(update={"model": cfg.model.model_copy(update={"backbone": cfg.model.backbone.model_copy(update={"pretrained": "facebook/wav2vec2-base"})})})
    assert with_absolute_local_paths(hub).model.backbone.pretrained == "facebook/wav2vec2-base"
