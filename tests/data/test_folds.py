"""Speaker-independent fold assignment."""

from __future__ import annotations

import pytest

from emodistill.data.folds import assign_folds


def test_every_speaker_in_one_fold_and_balanced():
    counts = {f"s{i}": 10 + (i % 3) for i in range(20)}
    folds = assign_folds(counts, 5, seed=1)
    assert set(folds) == set(counts) and set(folds.values()) == set(range(5))
    totals = [sum(counts[s] for s in folds if folds[s] == f) for f in range(5)]
    assert max(totals) - min(totals) <= max(counts.values())


def test_deterministic_by_seed():
    counts = {f"s{i}": 5 for i in range(12)}
    assert assign_folds(counts, 3, 0) == assign_folds(dict(reversed(list(counts.items()))), 3, 0)
    assert assign_folds(counts, 3, 0) != assign_folds(counts, 3, 1)


def test_too_few_speakers():
    with pytest.raises(ValueError, match="cannot fill 5"):
        assign_folds({"a": 1, "b": 2}, 5)
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds({"a": 1, "b": 2}, 1)
