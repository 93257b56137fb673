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
