"""The classical floor: eGeMAPS functionals + a linear classifier, on the same speakers.

SER papers report it beside every network (Eyben et al., "The Geneva Minimalistic Acoustic
Parameter Set", 2016): 88 utterance-level functionals of pitch, loudness, spectral balance,
formants, jitter/shimmer and rhythm, computed by openSMILE (the ``opensmile`` package
ships its extractor), standardised on the training clips, then a class-balanced logistic
regression. A network that does not beat it on held-out speakers is not yet worth its
latency.

    clips (16 kHz mono) -> egemaps_features (n, 88) -> fit_baseline(train) -> evaluate(test)

No Ray, no torch; the training and evaluation code call :func:`run_baseline` with the
clips of the speakers they already selected, so the baseline never sees other speakers.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from emodistill.evaluate.metrics import classification_metrics

NAME = "egemaps_logreg"
FEATURE_SET = "eGeMAPSv02"
NUM_FEATURES = 88


@lru_cache(maxsize=1)
def _smile():
    import opensmile

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )


def egemaps_features(waves: Sequence[np.ndarray], sample_rate: int = 16000, workers: int = 2) -> np.ndarray:
    """(n, 88) float64 eGeMAPS functionals, one row per clip (clips in any length)."""
    smile = _smile()

    def one(wave: np.ndarray) -> np.ndarray:
        x = np.asarray(wave, dtype=np.float32)
        return smile.process_signal(x, sample_rate).to_numpy(dtype=np.float64)[0]

    if not len(waves):
        return np.zeros((0, NUM_FEATURES))
    with ThreadPoolExecutor(max(1, workers)) as pool:  # the extractor releases the GIL
        rows = list(pool.map(one, waves))
    feats = np.stack(rows)
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class Baseline:
    """A fitted scaler + logistic regression over eGeMAPS functionals."""

    pipeline: Any
    num_classes: int

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.pipeline.predict(features)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(n, num_classes), columns in label-id order (absent training classes get 0)."""
        proba = self.pipeline.predict_proba(features)
        out = np.zeros((len(features), self.num_classes))
        out[:, self.pipeline.classes_] = proba
        return out


def fit_baseline(features: np.ndarray, labels: Sequence[int], num_classes: int, c: float = 1.0, seed: int = 0) -> Baseline:
    """Standardise, then a class-balanced multinomial logistic regression (L2, strength ``c``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    if len(set(labels.tolist())) < 2:
        raise ValueError("the baseline needs training clips of at least two classes")
    pipe = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed),
    )
    pipe.fit(features, labels)
    return Baseline(pipe, num_classes)


def run_baseline(
    train_waves: Sequence[np.ndarray],
    train_labels: Sequence[int],
    test_waves: Sequence[np.ndarray],
    test_labels: Sequence[int],
    num_classes: int,
    *,
    sample_rate: int = 16000,
    c: float = 1.0,
    seed: int = 0,
) -> dict:
    """Fit on the training clips, score the test clips: ``classification_metrics`` plus
    ``name``, ``features`` and the clip counts."""
    model = fit_baseline(egemaps_features(train_waves, sample_rate), train_labels, num_classes, c=c, seed=seed)
    preds = model.predict(egemaps_features(test_waves, sample_rate))
    return {
        "name": NAME,
        "features": FEATURE_SET,
        "train_clips": len(train_waves),
        "test_clips": len(test_waves),
        **classification_metrics(test_labels, preds, num_classes),
    }


__all__ = ["NAME", "Baseline", "egemaps_features", "fit_baseline", "run_baseline"]
