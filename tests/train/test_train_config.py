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


def test_dry_run_prints_the_resolved_config():
    exe = Path(sys.executable).with_name("emodistill")
    out = subprocess.run(
        [str(exe), "train", "--config", "jobs/configs/demo_cpu.yaml", "--dry-run", "optim.epochs=3", "loss.preset=paper"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert resolved["optim"]["epochs"] == 3 and resolved["loss"]["temperature"] == 1.0
    bad = subprocess.run(
        [str(exe), "train", "--config", "jobs/configs/demo_cpu.yaml", "--dry-run", "optim.epochs=zero"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "epochs" in bad.stderr


def test_an_earlier_run_of_the_same_name_is_never_taken_silently(tmp_path):
    """Ray Train resumes (or returns) a run found at storage/name; a new run on changed
    data must not inherit it by accident."""
    from emodistill.train.loop import prepare_run_dir

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
