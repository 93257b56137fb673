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


# ---- selection: train / val / test ---------------------------------------------------------


def _info(speakers_per_fold=3, folds=4, splits=False):
    from emodistill.data.schema import DatasetInfo

    speaker_folds = {f"s{f}{i}": f for f in range(folds) for i in range(speakers_per_fold)}
    by_speaker = {s: {"a": 5, "b": 5} for s in speaker_folds}
    by_fold = {str(f): {"a": 5 * speakers_per_fold, "b": 5 * speakers_per_fold} for f in range(folds)}
    return DatasetInfo(
        labels=["a", "b"], shards=[], num_rows=10 * len(speaker_folds), total_seconds=1.0, num_folds=folds,
        fold_source="speakers", speaker_folds=speaker_folds, counts_by_fold=by_fold, counts_by_speaker=by_speaker,
        counts_by_split={"train": {"a": 50}, "dev": {"a": 20}, "test": {"a": 30}} if splits else {},
        source="x", format="csv", files_seen=1, rejected=0, created_at="now",
    )


def test_default_selection_never_selects_on_test_speakers():
    from emodistill.data.folds import select

    info = _info()
    sel = select(info, seed=0)
    assert sel.test.folds == [3] and sel.train.folds == [0, 1, 2]
    train, val, test = (set(sel.speakers[k]) for k in ("train", "val", "test"))
    assert test == {"s30", "s31", "s32"}
    assert len(val) == 2 and not (val & test) and not (val & train) and not (train & test)
    assert train | val == {s for s, f in info.speaker_folds.items() if f != 3}
    assert sel.train.num_rows(info) == 70 and sel.val.num_rows(info) == 20
    assert select(info, seed=0) == sel and select(info, seed=1).speakers["val"] != sel.speakers["val"]


def test_explicit_folds_and_clear_conflicts():
    from emodistill.data.folds import select

    info = _info()
    sel = select(info, val_folds=[2], test_folds=[0])
    assert sel.train.folds == [1, 3] and sel.val.folds == [2] and sel.test.folds == [0]
    assert select(info, test_folds=[]).test is None, "[]: no test part (a final run on every speaker)"
    with pytest.raises(ValueError, match="more than one of train, val and test"):
        select(info, val_folds=[3])  # the old meaning of val_folds: it is the default test fold
    with pytest.raises(ValueError, match="no folds \\[7\\]"):
        select(info, test_folds=[7])
    with pytest.raises(ValueError, match="too few to carve"):
        select(_info(speakers_per_fold=1, folds=2), test_folds=[1])


def test_corpus_splits_stay_available():
    from emodistill.data.folds import select

    info = _info(splits=True)
    sel = select(info, train_splits=["train"], val_splits=["dev"], test_splits=["test"])
    assert sel.protocol == "splits" and sel.test.splits == ["test"] and sel.val.num_rows(info) == 20
    with pytest.raises(ValueError, match="more than one"):
        select(info, train_splits=["train"], val_splits=["train"])
    with pytest.raises(ValueError, match="no splits"):
        select(info, train_splits=["train"], val_splits=["devel"])


def test_part_filters_arrow_rows():
    import pyarrow as pa

    from emodistill.data.folds import Part

    table = pa.table({"fold": pa.array([0, 0, 1, 2], pa.int32()), "split": ["a", "b", "a", None],
                      "speaker": ["x", "y", "z", "w"]})
    assert Part(folds=[0, 1], exclude_speakers=["y"]).filter(table)["speaker"].to_pylist() == ["x", "z"]
    assert Part(folds=[0, 1], speakers=["y"]).filter(table)["speaker"].to_pylist() == ["y"]
    assert Part(splits=["a"]).filter(table)["speaker"].to_pylist() == ["x", "z"]
