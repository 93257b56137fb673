"""Sweep objectives and the Pareto front: pure functions, hand-computed values."""

from __future__ import annotations

import pytest

from emodistill.tune.objectives import OBJECTIVES, objectives, pareto_front, uar_latency_auc

METRICS = {"val/exit_1/uar": 0.5, "val/exit_2/uar": 0.7, "val/exit_4/uar": 0.6, "val/loss/total": 1.0}
LATENCY = {"exit_1": 10.0, "exit_2": 20.0, "exit_4": 40.0}


def test_objectives_by_hand():
    o = objectives(METRICS, LATENCY, budget_ms=25.0)
    assert set(o) == set(OBJECTIVES)
    assert o["teacher_uar"] == 0.6
    assert o["mean_exit_uar"] == pytest.approx(0.6)
    assert o["budget_uar"] == 0.7  # exit_2 is the deepest within 25 ms
    # 0..10: 0, 10..20: 0.5, 20..40: max(0.5, 0.7, 0.6) = 0.7  -> (5 + 14) / 40
    assert o["uar_latency_auc"] == pytest.approx((0.5 * 10 + 0.7 * 20) / 40)
    assert objectives(METRICS, LATENCY, budget_ms=5.0)["budget_uar"] == 0.0
    assert objectives(METRICS, LATENCY, budget_ms=1000.0)["budget_uar"] == 0.6


def test_auc_is_normalised():
    assert uar_latency_auc([(0.0, 0.8), (10.0, 0.8)]) == pytest.approx(0.8)
    assert 0.0 <= uar_latency_auc([(5.0, 0.3), (10.0, 0.9)]) <= 1.0


def test_missing_exits_are_an_error():
    with pytest.raises(ValueError, match="no val/<exit>/uar"):
        objectives({"val/loss/total": 1.0}, LATENCY, 10.0)


def test_pareto_front():
    pts = [(10, 0.5), (20, 0.7), (15, 0.4), (40, 0.6), (40, 0.75), (5, 0.2)]
    assert sorted(pareto_front(pts)) == [0, 1, 4, 5]


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
