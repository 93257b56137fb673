"""Fusion and early-exit policies on hand-made logits; metrics against definitions."""

from __future__ import annotations

import numpy as np
import pytest

from emodistill.evaluate.metrics import classification_metrics, summary
from emodistill.evaluate.policies import early_exit, fusion_predictions, normalised_entropy, top2_margin


def test_uar_is_mean_recall_and_wa_is_accuracy():
    labels = [0, 0, 0, 0, 1, 1]
    preds = [0, 0, 0, 0, 0, 1]
    m = classification_metrics(labels, preds, 3)
    assert m["wa"] == pytest.approx(5 / 6)
    assert m["uar"] == pytest.approx((1.0 + 0.5) / 2), "class 2 is absent from the labels and not averaged"
    assert m["confusion"] == [[4, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert summary({"exit_1": {"uar": 0.5}, "exit_4": {"uar": 0.9}}) == {"teacher_uar": 0.9, "mean_exit_uar": 0.7}


def test_fusion_takes_the_most_confident_student():
    logits = {
        "exit_1": np.array([[5.0, 0.0], [0.1, 0.0]]),  # sure of class 0 / unsure
        "exit_2": np.array([[0.0, 1.0], [0.0, 3.0]]),  # unsure / sure of class 1
    }
    assert fusion_predictions(logits, ["exit_1", "exit_2"]).tolist() == [0, 1]


def test_early_exit_stops_at_the_first_confident_exit():
    logits = {
        "exit_1": np.array([[4.0, 0.0], [0.2, 0.0]]),
        "exit_2": np.array([[0.0, 4.0], [0.0, 0.1]]),
        "exit_4": np.array([[0.0, 4.0], [0.0, 4.0]]),
    }
    preds, stop = early_exit(logits, "margin", 0.5)
    assert stop.tolist() == [0, 2] and preds.tolist() == [0, 1]
    preds, stop = early_exit(logits, "margin", 1.01)  # nobody is that confident: the deepest answers
    assert stop.tolist() == [2, 2]
    _, stop = early_exit(logits, "entropy", 1.0)  # everything passes: all stop at the first exit
    assert stop.tolist() == [0, 0]
    with pytest.raises(ValueError, match="criterion"):
        early_exit(logits, "nope", 0.1)


def test_margin_and_entropy():
    assert top2_margin(np.array([[0.1, 0.7, 0.2]])).tolist() == pytest.approx([0.5])
    assert normalised_entropy(np.array([[0.5, 0.5]])).tolist() == pytest.approx([1.0])
    assert normalised_entropy(np.array([[1.0, 0.0]]))[0] < 1e-6
