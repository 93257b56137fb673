"""Sweep objectives and the Pareto front: pure functions, hand-computed values."""

from __future__ import annotations

import pytest

from emodistill.evaluate.objectives import OBJECTIVES, objectives, pareto_front, uar_latency_auc

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

