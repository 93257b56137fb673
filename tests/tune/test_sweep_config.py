"""Sweep configs and `emodistill tune` refusing bad runs before any trial starts."""

from __future__ import annotations

import pytest


def test_sweep_config_checks_points_and_search_values(tmp_path):
    """Searched values and reference points are validated in the train config before any trial."""
    import yaml

    from emodistill.tune.config import SweepConfig

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    base = {"train_config": str(root / "jobs/configs/demo_cpu.yaml"),
            "search": {"loss.kd_weight": {"kind": "uniform", "low": 0.0, "high": 2.0}}}
    cfg = SweepConfig.model_validate({**base, "points_to_evaluate": [{"loss.kd_weight": 1.0}]})
    cfg.check()
    # trials run in working directories of their own: the relative dataset path is made absolute
    assert cfg.base_train_raw()["data"]["dataset"] == str(__import__("pathlib").Path("runs/demo/data").absolute())
    with pytest.raises(ValueError, match="must give every searched value"):
        SweepConfig.model_validate({**base, "points_to_evaluate": [{"loss.temperature": 1.0}]})
    with pytest.raises(ValueError, match="points_to_evaluate\\[0\\] is not valid"):
        SweepConfig.model_validate({**base, "points_to_evaluate": [{"loss.kd_weight": -1.0}]}).check()
    with pytest.raises(ValueError, match="search.loss.kd_weight = -1.0 is not valid"):
        SweepConfig.model_validate(
            {**base, "search": {"loss.kd_weight": {"kind": "uniform", "low": -1.0, "high": 2.0}}}
        ).check()
    with pytest.raises(ValueError, match="low < high"):
        SweepConfig.model_validate({**base, "search": {"loss.kd_weight": {"kind": "uniform", "low": 2, "high": 1}}})
    for shipped in ["tune_demo_cpu.yaml", "tune_gpu.yaml"]:  # every shipped sweep config validates
        raw = yaml.safe_load((root / "jobs/configs" / shipped).read_text())
        assert SweepConfig.model_validate(raw).search


def test_bad_runs_are_clear_errors(tmp_path, tiny_dataset):
    """A missing dataset, or --resume of a sweep that never ran: one line, exit 2, no trial."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    exe = Path(sys.executable).with_name("emodistill")

    def tune(dataset: str) -> subprocess.CompletedProcess:
        sweep = {"train_config": str(root / "jobs/configs/demo_cpu.yaml"),
                 "train_overrides": [f"data.dataset={dataset}"],
                 "search": {"loss.kd_weight": {"kind": "uniform", "low": 0.0, "high": 2.0}},
                 "storage_path": str(tmp_path / "ray"), "out_dir": str(tmp_path / "out")}
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
        return subprocess.run([str(exe), "tune", "--config", str(tmp_path / "sweep.yaml"), "--resume"],
                              capture_output=True, text=True, timeout=300)

    missing = tune(str(tmp_path / "nothing-here"))
    assert missing.returncode == 2 and "no dataset at" in missing.stderr, missing.stderr[-2000:]
    never_ran = tune(tiny_dataset)
    assert never_ran.returncode == 2 and "no sweep state to resume" in never_ran.stderr, never_ran.stderr[-2000:]
    assert not (tmp_path / "out").exists()
