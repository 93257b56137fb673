"""Using several exits at inference: the paper's fusion and early-exit policies (pure numpy).

- Fusion (the paper): every student exit runs; per clip, keep the answer of the student
  whose top-1 minus top-2 logit margin is largest.
- Early exit: go through the exits shallow to deep and stop at the first one that is
  confident enough: top-1 minus top-2 probability margin >= threshold (``margin``), or
  normalised entropy <= threshold (``entropy``). The deepest exit answers otherwise.
"""

from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top2_margin(values: np.ndarray) -> np.ndarray:
    """top-1 minus top-2 along the last axis. (n, classes) -> (n,)."""
    part = np.sort(values, axis=-1)
    return part[:, -1] - part[:, -2]


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy / log(classes), in [0, 1]. (n, classes) -> (n,)."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1) / np.log(probs.shape[-1])


def fusion_predictions(logits: dict[str, np.ndarray], students: list[str]) -> np.ndarray:
    """The paper's fusion over ``students``: arg-max of the exit with the largest logit margin."""
    stacked = np.stack([logits[n] for n in students])  # (exits, n, classes)
    margins = np.stack([top2_margin(logits[n]) for n in students])  # (exits, n)
    best = margins.argmax(axis=0)  # (n,)
    return stacked[best, np.arange(stacked.shape[1])].argmax(axis=-1)


def early_exit(
    logits: dict[str, np.ndarray], criterion: str, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(predictions (n,), index of the exit each clip stopped at (n,)); exits in ``logits`` order."""
    names = list(logits)
    n = len(next(iter(logits.values())))
    preds = np.full(n, -1)
    stop = np.full(n, len(names) - 1)
    undecided = np.ones(n, dtype=bool)
    for i, name in enumerate(names):
        probs = softmax(logits[name])
        if criterion == "margin":
            confident = top2_margin(probs) >= threshold
        elif criterion == "entropy":
            confident = normalised_entropy(probs) <= threshold
        else:
            raise ValueError(f"unknown early-exit criterion {criterion!r} (margin or entropy)")
        take = undecided & (confident | (i == len(names) - 1))
        preds[take] = probs[take].argmax(axis=-1)
        stop[take] = i
        undecided &= ~take
    return preds, stop
