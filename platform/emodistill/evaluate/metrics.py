"""Classification metrics per exit (scikit-learn): UAR first, then WA and macro-F1.

UAR (unweighted average recall) = mean per-class recall = balanced accuracy; WA
(weighted accuracy) = plain accuracy. Both are what SER papers report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score


def classification_metrics(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> dict:
    """{"uar", "wa", "macro_f1", "confusion"} for integer labels and predictions."""
    classes = list(range(num_classes))
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    present = sorted(set(labels.tolist()))  # recall is undefined for classes absent from the labels
    return {
        "uar": float(recall_score(labels, preds, labels=present, average="macro", zero_division=0)),
        "wa": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, labels=present, average="macro", zero_division=0)),
        "confusion": confusion_matrix(labels, preds, labels=classes).tolist(),
    }


def exit_metrics(logits: dict[str, np.ndarray], labels: np.ndarray, num_classes: int) -> dict[str, dict]:
    """Per exit: classification metrics of arg-max predictions. logits: exit -> (n, classes)."""
    return {name: classification_metrics(labels, z.argmax(axis=1), num_classes) for name, z in logits.items()}


def summary(per_exit: dict[str, dict]) -> dict[str, float]:
    """teacher_uar (deepest exit) and mean_exit_uar (mean over all exits)."""
    names = list(per_exit)
    return {
        "teacher_uar": per_exit[names[-1]]["uar"],
        "mean_exit_uar": float(np.mean([per_exit[n]["uar"] for n in names])),
    }
