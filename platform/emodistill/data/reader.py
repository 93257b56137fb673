"""Reading a dataset for training and evaluation with Ray Data.

``read_dataset(uri, part=Part(...), options=BatchOptions(...))`` streams the Parquet
shards named in dataset.json, keeps the rows of the part, decodes FLAC in parallel (Ray
Data tasks) and yields rows ``{"waveform", "label_id", "num_samples", "utterance_id",
"speaker"}``.

Training reads through :func:`training_dataset`: rows are shuffled across the whole
training set before decoding, with a new order every epoch that the run's seed fixes
(Ray Data's ``RandomSeedConfig(seed, reseed_after_execution=True)``: each pass over the
data is one execution). Ingest writes rows sorted by nothing that matters, but a corpus
recorded in sessions or dialogs keeps neighbours alike; a 32-row local buffer on top of
a fixed block order would fill each batch from one dialog. Random crops happen in the
worker (:class:`Collate` with the epoch), seeded per clip and epoch. In a worker::

    shard = ray.train.get_dataset_shard("train")
    for batch in shard.iter_torch_batches(batch_size=16, collate_fn=Collate(options, seed, epoch)):
        model(batch["input_values"], batch["attention_mask"]) ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
import ray.data
from ray.data.collate_fn import NumpyBatchCollateFn

from emodistill.data.batching import BatchOptions, collate, ragged
from emodistill.data.folds import Part, part_of
from emodistill.data.rows import COLUMNS, decode_rows, prepare_clips
from emodistill.data.schema import read_info, shard_uris
from emodistill.storage import S3Options, get_fs, pyarrow_fs

Shuffle = Literal["global", "blocks", "none"]


class Collate(NumpyBatchCollateFn):
    """numpy batch -> {"input_values", "attention_mask", "labels"} tensors (padded, masked).

    With crop ``options``, each clip is cropped here, seeded by ``(seed, epoch, utterance_id)``.
    """

    def __init__(self, options: BatchOptions | None = None, seed: int | None = None, epoch: int = 0):
        self.options = options
        self.seed = seed
        self.epoch = epoch

    def __call__(self, batch):
        if self.options is not None and self.options.mode == "crop":
            waves = prepare_clips(list(batch["waveform"]), list(batch["utterance_id"]), self.options, self.seed, self.epoch)
            batch = {**batch, "waveform": ragged(waves)}
        return collate(batch)


def _keep(table: pa.Table, part: dict) -> pa.Table:
    return Part.model_validate(part).filter(table)


def _source(uri: str, part: Part, s3: S3Options | None):
    info = read_info(uri, s3)
    part.check(info, uri)
    fs, root = get_fs(uri, s3)
    ds = ray.data.read_parquet(shard_uris(root, info), filesystem=pyarrow_fs(fs), columns=COLUMNS)
    return ds.map_batches(_keep, batch_format="pyarrow", fn_kwargs={"part": part.model_dump()})


def read_dataset(
    uri: str,
    *,
    folds: Sequence[int] | None = None,
    splits: Sequence[str] | None = None,
    part: Part | None = None,
    options: BatchOptions | None = None,
    s3: S3Options | None = None,
    seed: int | None = None,
    rows_per_block: int = 64,
):
    """A Ray Data dataset of decoded, prepared clips of ``part`` (or ``folds``/``splits``)
    in storage order; crops (if any) seeded by ``seed`` per clip."""
    options = options or BatchOptions()
    ds = _source(uri, part if part is not None else part_of(folds, splits), s3)
    return ds.map_batches(
        decode_rows, batch_format="pyarrow", batch_size=rows_per_block, fn_kwargs={"options": options, "seed": seed}
    )


def training_dataset(
    uri: str,
    part: Part,
    options: BatchOptions,
    *,
    seed: int,
    shuffle: Shuffle = "global",
    s3: S3Options | None = None,
    rows_per_block: int = 64,
):
    """The training rows of ``part``, shuffled anew every epoch, decoded; crop-mode clips
    stay whole here (the worker's :class:`Collate` crops them with the epoch's seed).

    ``shuffle``: ``global`` (every row anywhere in every epoch: the default), ``blocks``
    (block order only, for corpora too large to shuffle; pair it with a local buffer), or
    ``none``. Each pass over the dataset is one Ray Data execution, and the order is
    seeded by (seed, execution count); after a worker-group restart the count starts
    again, so a resumed run's remaining epochs reuse the first epochs' orders (still
    shuffled and seeded, just not the orders an uninterrupted run would have drawn).
    """
    from ray.data import RandomSeedConfig

    ds = _source(uri, part, s3)
    per_epoch = RandomSeedConfig(seed=int(seed), reseed_after_execution=True)
    if shuffle == "global":
        ds = ds.random_shuffle(seed=per_epoch)
    elif shuffle == "blocks":
        ds = ds.randomize_block_order(seed=per_epoch)
    decode = options if options.mode != "crop" else options.model_copy(update={"mode": "full"})
    return ds.map_batches(
        decode_rows, batch_format="pyarrow", batch_size=rows_per_block, fn_kwargs={"options": decode, "seed": seed}
    )


def batch_mix(speakers: Sequence[str], labels: Sequence[int], batch_size: int) -> dict[str, float]:
    """How mixed consecutive batches of a row order are: mean distinct speakers and labels per batch."""
    n = len(speakers) // batch_size * batch_size
    spk = [len(set(speakers[i : i + batch_size])) for i in range(0, n, batch_size)]
    lab = [len(set(labels[i : i + batch_size])) for i in range(0, n, batch_size)]
    return {"speakers_per_batch": float(np.mean(spk)), "labels_per_batch": float(np.mean(lab)), "batches": len(spk)}
