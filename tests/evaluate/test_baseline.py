"""The eGeMAPS + logistic-regression floor: real openSMILE features, learnable on pitch."""

import numpy as np
import pytest
from conftest import tone

from emodistill.evaluate.baseline import NUM_FEATURES, egemaps_features, fit_baseline, run_baseline


def _clips(freqs, per=6, seed=0):
    rng = np.random.default_rng(seed)
    waves, labels = [], []
    for label, f in enumerate(freqs):
        for k in range(per):
            waves.append(tone(float(rng.uniform(0.8, 1.5)), freq=f * float(rng.uniform(0.95, 1.05)), seed=seed * 100 + k))
            labels.append(label)
    return waves, labels


def test_features_are_88_finite_functionals_per_clip():
    waves, _ = _clips([150.0, 300.0], per=2)
    feats = egemaps_features(waves)
    assert feats.shape == (4, NUM_FEATURES)
    assert np.isfinite(feats).all()
    assert egemaps_features([]).shape == (0, NUM_FEATURES)


def test_baseline_separates_pitch_classes_on_unseen_clips():
    train, y_train = _clips([140.0, 240.0, 340.0], seed=0)
    test, y_test = _clips([140.0, 240.0, 340.0], per=3, seed=1)
    result = run_baseline(train, y_train, test, y_test, num_classes=3)
    assert result["uar"] >= 0.9
    assert result["name"] == "egemaps_logreg" and result["test_clips"] == 9


def test_probabilities_keep_label_order_when_a_class_is_missing_from_training():
    train, y = _clips([140.0, 340.0], per=4)
    y = [0 if v == 0 else 2 for v in y]  # classes 0 and 2 of 3
    model = fit_baseline(egemaps_features(train), y, num_classes=3)
    proba = model.predict_proba(egemaps_features(train[:2]))
    assert proba.shape == (2, 3) and np.allclose(proba[:, 1], 0.0)


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="two classes"):
        fit_baseline(np.zeros((3, NUM_FEATURES)), [1, 1, 1], num_classes=2)
