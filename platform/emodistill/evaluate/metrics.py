"""Classification metrics per exit (scikit-learn), and the names of every metric a run reports.

UAR (unweighted average recall) = mean per-class recall = balanced accuracy; WA
(weighted accuracy) = plain accuracy. Both are what SER papers report.

The one owner of metric names. Every epoch of a run reports, for its selection (``val``)
speakers::

    val/teacher_uar, val/mean_exit_uar          summary (higher is better)
    val/exit_<b>/uar, .../wa, .../macro_f1      per exit (higher is better)
    val/loss/<term>, val/loss/exit_<b>/<term>   the loss on those clips (lower is better)
    val/rows                                    clips validated (not a score)

:func:`metric_mode` says whether a name is one of them and which way it improves, so a
config that names anything else (``val/teacher/uar``) is rejected when it is loaded,
not after a whole run whose checkpoints all scored -inf.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np

from emodistill.exits import is_exit_name, sort_exits

SELECTION_PREFIX = "val"
SUMMARY_KEYS = ("teacher_uar", "mean_exit_uar")
EXIT_KEYS = ("uar", "wa", "macro_f1")
LOSS_TERMS = ("total", "teacher_ce", "exit_ce", "kd", "feature")
EXIT_LOSS_TERMS = ("ce", "kd", "feature")
Mode = Literal["max", "min"]


def classification_metrics(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> dict:
    """{"uar", "wa", "macro_f1", "confusion"} for integer labels and predictions."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score  # not at import: configs load fast

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
    names = sort_exits(per_exit)
    return {
        "teacher_uar": per_exit[names[-1]]["uar"],
        "mean_exit_uar": float(np.mean([per_exit[n]["uar"] for n in names])),
    }


def metric_key(exit: str, key: str, prefix: str = SELECTION_PREFIX) -> str:
    """``("exit_3", "uar") -> "val/exit_3/uar"``."""
    return f"{prefix}/{exit}/{key}"


def exits_in(metrics: dict, prefix: str = SELECTION_PREFIX) -> list[str]:
    """The exits a flat metrics dict reports (shallow first)."""
    found = {k.split("/")[1] for k in metrics if k.startswith(f"{prefix}/") and k.count("/") == 2}
    return sort_exits(n for n in found if is_exit_name(n))


def flat_metrics(per_exit: dict[str, dict], prefix: str = SELECTION_PREFIX) -> dict[str, float]:
    """Per-exit metrics as the flat names a run reports (summary and per exit)."""
    out = {f"{prefix}/{k}": v for k, v in summary(per_exit).items()}
    for name, m in per_exit.items():
        for key in EXIT_KEYS:
            out[metric_key(name, key, prefix)] = m[key]
    return out


def metric_mode(name: str, exits: Sequence[str] | None = None) -> Mode:
    """``max`` or ``min`` for a metric a run reports; a ValueError naming the choices for
    any other name (and for an exit not in ``exits``, when given)."""
    p = re.escape(SELECTION_PREFIX)
    if re.fullmatch(rf"{p}/({'|'.join(SUMMARY_KEYS)})", name):
        return "max"
    m = re.fullmatch(rf"{p}/([^/]+)/({'|'.join(EXIT_KEYS)})", name)
    if m and is_exit_name(m.group(1)):
        _check_exit(m.group(1), exits, name)
        return "max"
    if re.fullmatch(rf"{p}/loss/({'|'.join(LOSS_TERMS)})", name):
        return "min"
    m = re.fullmatch(rf"{p}/loss/([^/]+)/({'|'.join(EXIT_LOSS_TERMS)})", name)
    if m and is_exit_name(m.group(1)):
        _check_exit(m.group(1), exits, name)
        return "min"
    example = (exits or ["exit_3"])[0]
    raise ValueError(
        f"{name!r} is not a metric a run reports; use {SELECTION_PREFIX}/teacher_uar, {SELECTION_PREFIX}/mean_exit_uar, "
        f"{metric_key(example, 'uar')} (or wa, macro_f1 of any exit), or {SELECTION_PREFIX}/loss/<{'|'.join(LOSS_TERMS)}>"
    )


def _check_exit(exit: str, exits: Sequence[str] | None, name: str) -> None:
    if exits is not None and exit not in set(exits):
        raise ValueError(f"{name!r} names {exit}, which this model does not have; its exits are {sort_exits(exits)}")


def merge_validation(parts: list[tuple], num_classes: int) -> dict[str, float]:
    """Flat ``val/...`` metrics from every worker's (logits by exit, labels, loss sums, count)."""
    filled = [p for p in parts if len(p[1])]  # a worker may get no validation rows
    if not filled:
        raise ValueError("the validation part gave no clips")
    logits = {n: np.concatenate([p[0][n] for p in filled]) for n in filled[0][0]}
    labels = np.concatenate([p[1] for p in filled])
    count = sum(p[3] for p in parts)
    metrics = flat_metrics(exit_metrics(logits, labels, num_classes))
    for key in filled[0][2]:
        metrics[f"{SELECTION_PREFIX}/loss/{key}"] = sum(p[2].get(key, 0.0) for p in parts) / max(1, count)
    metrics[f"{SELECTION_PREFIX}/rows"] = float(count)
    return metrics


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    arr = np.asarray(list(values), dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
