"""Reading for training: Ray Data streams decoded, padded batches; the same rows as in-process."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from conftest import tone, write_audio
from emodistill.data.batching import PAPER_FIXED_SAMPLES, BatchOptions, pad_batch, prepare
from emodistill.data.ingest import IngestConfig, ingest
from emodistill.data.reader import Collate, read_dataset
from emodistill.data.rows import load_arrays


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    rng = np.random.default_rng(0)
    for s in range(4):
        for label, freq in {"angry": 330.0, "sad": 150.0}.items():
            for k in range(3):
                rel = f"wav/{s}_{label}_{k}.wav"
                write_audio(root / rel, tone(float(rng.uniform(0.5, 2.5)), freq=freq, seed=s * 10 + k))
                rows.append((rel, label, f"s{s}"))
    with open(root / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "speaker"), *rows])
    dest = tmp_path_factory.mktemp("ds")
    ingest(IngestConfig(source=str(root), dest=str(dest), folds=2, workers=1), progress=False)
    return str(dest)


def test_ray_data_yields_padded_batches_with_masks(ray_local, dataset):
    ds = read_dataset(dataset, folds=[0], options=BatchOptions(mode="full"))
    expected = load_arrays(dataset, folds=[0])
    seen = {}
    for batch in ds.iter_torch_batches(batch_size=4, collate_fn=Collate()):
        x, mask, labels = batch["input_values"], batch["attention_mask"], batch["labels"]
        assert x.dtype == torch.float32 and mask.dtype == torch.long and labels.dtype == torch.long
        assert x.shape == mask.shape and x.shape[0] == labels.shape[0] <= 4
        lengths = mask.sum(dim=1)
        assert int(lengths.max()) == x.shape[1], "padded to the longest clip of the batch"
        for row, n in zip(x, lengths):
            assert torch.all(row[int(n):] == 0)
            seen[round(float(row[: int(n)].abs().sum()), 3)] = int(n)
    assert len(seen) == len(expected["label_id"])
    assert sorted(seen.values()) == sorted(int(w.size) for w in expected["waveform"])


def test_crop_and_fixed_modes(ray_local, dataset):
    crop = read_dataset(dataset, folds=[0, 1], options=BatchOptions(mode="crop", max_seconds=1.0))
    lengths = [int(n) for b in crop.iter_batches(batch_size=8, batch_format="numpy") for n in b["num_samples"]]
    assert max(lengths) == 16000 and min(lengths) < 16000
    fixed = read_dataset(dataset, splits=None, options=BatchOptions(mode="fixed"))
    for batch in fixed.iter_torch_batches(batch_size=8, collate_fn=Collate()):
        assert batch["input_values"].shape[1] == PAPER_FIXED_SAMPLES and bool(batch["attention_mask"].all())


def test_unknown_folds_are_rejected(dataset):
    with pytest.raises(ValueError, match="no folds \\[7\\]"):
        read_dataset(dataset, folds=[7])
    with pytest.raises(ValueError, match="no splits"):
        load_arrays(dataset, splits=["test"])


def test_prepare_modes():
    wave = np.arange(10, dtype=np.float32)
    assert prepare(wave, BatchOptions(mode="fixed", fixed_samples=25)).tolist() == (list(range(10)) * 3)[:25]
    assert prepare(wave, BatchOptions(mode="fixed", fixed_samples=4)).tolist() == [0, 1, 2, 3]
    opts = BatchOptions(mode="crop", max_seconds=4 / 16000)
    window = prepare(wave, opts, np.random.default_rng(0))
    assert window.size == 4 and window[1] - window[0] == 1
    assert prepare(wave, BatchOptions(mode="full")) is wave


def test_pad_batch():
    x, mask = pad_batch([np.ones(3, np.float32), np.ones(5, np.float32)])
    assert x.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    with pytest.raises(ValueError):
        pad_batch([])


def test_crops_are_seeded_per_clip_and_epoch():
    """Training crops were unseeded: two runs of one config cropped different windows."""
    from emodistill.data.batching import ragged

    options = BatchOptions(mode="crop", max_seconds=0.1)
    waves = [np.arange(16000, dtype=np.float32) + i for i in range(4)]
    batch = {"waveform": ragged(waves), "label_id": np.arange(4), "utterance_id": np.array([f"c/{i}" for i in range(4)], object)}
    first = Collate(options, seed=7, epoch=0)(batch)["input_values"]
    assert torch.equal(first, Collate(options, seed=7, epoch=0)(batch)["input_values"])
    reordered = {k: v[::-1].copy() for k, v in batch.items()}
    assert torch.equal(first.flip(0), Collate(options, seed=7, epoch=0)(reordered)["input_values"]), "order-free"
    assert not torch.equal(first, Collate(options, seed=7, epoch=1)(batch)["input_values"]), "new crops each epoch"
    assert not torch.equal(first, Collate(options, seed=8, epoch=0)(batch)["input_values"])
    assert first.shape == (4, 1600)


def _epoch_orders(ds, epochs):
    (split,) = ds.streaming_split(1, equal=True)  # as Ray Train hands a worker its shard
    return [[u for b in split.iter_batches(batch_size=8, batch_format="numpy") for u in b["utterance_id"]]
            for _ in range(epochs)]


@pytest.mark.slow
def test_training_rows_are_shuffled_globally_and_anew_each_epoch(ray_local, dataset):
    """Ingest order, a fixed block order and a 32-row buffer filled each batch from
    neighbouring rows (one dialog) in the same order every epoch."""
    from emodistill.data.folds import Part
    from emodistill.data.reader import training_dataset

    part = Part(folds=[0, 1])
    options = BatchOptions(mode="crop", max_seconds=1.0)
    orders = _epoch_orders(training_dataset(dataset, part, options, seed=3), 3)
    stored = list(load_arrays(dataset, part=part)["utterance_id"])
    assert all(sorted(o) == sorted(stored) for o in orders), "every row once per epoch"
    assert len({tuple(o) for o in orders}) == 3, "a new order every epoch"
    assert all(o != stored for o in orders)
    assert _epoch_orders(training_dataset(dataset, part, options, seed=3), 3) == orders, "the seed fixes every epoch"
    assert _epoch_orders(training_dataset(dataset, part, options, seed=4), 1)[0] != orders[0]
    lengths = [n for b in training_dataset(dataset, part, options, seed=3).iter_batches(batch_format="numpy")
               for n in b["num_samples"]]
    assert max(lengths) > 16000, "crops happen in the worker (with the epoch), not in the pipeline"


@pytest.mark.slow
def test_validation_rows_are_each_scored_once_across_workers(ray_local):
    """Ray Train's default split (equal=True) dropped up to world_size - 1 val rows."""
    import threading

    import ray.data

    from emodistill.train.driver import data_config

    shards = data_config().configure(
        {"train": ray.data.range(10), "val": ray.data.range(25)}, world_size=2, worker_handles=None, worker_node_ids=None
    )
    seen: dict[int, list[int]] = {}

    def consume(rank: int) -> None:
        seen[rank] = [int(i) for b in shards[rank]["val"].iter_batches(batch_format="numpy") for i in b["id"]]

    threads = [threading.Thread(target=consume, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(seen[0] + seen[1]) == list(range(25))
