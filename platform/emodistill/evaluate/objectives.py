"""What a model is scored by: four objectives from per-exit UARs and exit latencies.
Pure functions, computed in one place: every epoch of a sweep's runs reports them (on the
selection speakers) and ``emodistill evaluate`` puts them in its report (on the test
speakers); tune ranks trials by those columns and never recomputes them.

- ``teacher_uar``      UAR of the deepest exit
- ``mean_exit_uar``    mean UAR over every exit
- ``budget_uar``       UAR of the deepest exit whose latency meets the budget (0 if none)
- ``uar_latency_auc``  area under the best-UAR-within-latency step curve, from 0 to the
                       deepest exit's latency, divided by that latency: 0..1; a model whose
                       shallow exits are already good scores high
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from emodistill.evaluate.metrics import metric_key
from emodistill.exits import sort_exits

OBJECTIVES = ("teacher_uar", "mean_exit_uar", "budget_uar", "uar_latency_auc")


def exit_uars(metrics: Mapping[str, float], exits: Sequence[str]) -> dict[str, float]:
    """``val/exit_<b>/uar`` of every exit in ``exits`` that the report has, shallow first."""
    found = {n: float(metrics[metric_key(n, "uar")]) for n in exits if metric_key(n, "uar") in metrics}
    if not found:
        raise ValueError(f"the report has no val/<exit>/uar for any of {list(exits)}")
    return {n: found[n] for n in sort_exits(found)}


def objectives(metrics: Mapping[str, float], latency_ms: Mapping[str, float], budget_ms: float) -> dict[str, float]:
    """The four objectives of one report (flat ``val/exit_<b>/uar`` metrics); ``latency_ms``
    per exit name (batch 1, p50)."""
    return objectives_of(exit_uars(metrics, list(latency_ms)), latency_ms, budget_ms)


def objectives_of(uar: Mapping[str, float], latency_ms: Mapping[str, float], budget_ms: float) -> dict[str, float]:
    """The four objectives from per-exit UARs ({exit: uar}) and latencies ({exit: ms})."""
    uar = {n: float(uar[n]) for n in sort_exits(uar) if n in latency_ms}
    if not uar:
        raise ValueError("no exit has both a UAR and a latency")
    names = list(uar)
    within = [n for n in names if latency_ms[n] <= budget_ms]
    return {
        "teacher_uar": uar[names[-1]],
        "mean_exit_uar": float(np.mean(list(uar.values()))),
        "budget_uar": uar[within[-1]] if within else 0.0,
        "uar_latency_auc": uar_latency_auc([(latency_ms[n], uar[n]) for n in names]),
    }


def uar_latency_auc(points: Sequence[tuple[float, float]]) -> float:
    """Normalised area under x -> best UAR among exits with latency <= x, x in [0, max latency]."""
    points = sorted(points)
    end = points[-1][0]
    if end <= 0:
        return max(u for _, u in points)
    area, best = 0.0, 0.0
    for (x, u), nxt in zip(points, [p[0] for p in points[1:]] + [end]):
        best = max(best, u)
        area += best * (nxt - x)
    return area / end


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower latency and higher UAR."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
