"""Reading a dataset for training and evaluation with Ray Data.

``read_dataset(uri, folds=[...], options=BatchOptions(...))`` streams the Parquet shards
named in dataset.json, keeps the requested folds or splits, decodes FLAC in parallel
(Ray Data tasks) and yields rows ``{"waveform", "label_id", "num_samples",
"utterance_id"}``. In a training worker::

    shard = ray.train.get_dataset_shard("train")
    for batch in shard.iter_torch_batches(batch_size=16, collate_fn=Collate()):
        model(batch["input_values"], batch["attention_mask"]) ...
"""

from __future__ import annotations

from collections.abc import Sequence

import ray.data
from ray.data.collate_fn import NumpyBatchCollateFn

from emodistill.data.batching import BatchOptions, collate
from emodistill.data.rows import COLUMNS, check_selection, decode_rows
from emodistill.data.schema import read_info, shard_uris
from emodistill.storage import S3Options, get_fs, pyarrow_fs


class Collate(NumpyBatchCollateFn):
    """numpy batch -> {"input_values", "attention_mask", "labels"} tensors (padded, masked)."""

    def __call__(self, batch):
        return collate(batch)


def read_dataset(
    uri: str,
    *,
    folds: Sequence[int] | None = None,
    splits: Sequence[str] | None = None,
    options: BatchOptions | None = None,
    s3: S3Options | None = None,
    seed: int | None = None,
    rows_per_block: int = 64,
):
    """A Ray Data dataset of decoded clips from the dataset at ``uri`` (local or s3://)."""
    options = options or BatchOptions()
    info = read_info(uri, s3)
    check_selection(info, folds, splits, uri)
    fs, root = get_fs(uri, s3)
    ds = ray.data.read_parquet(shard_uris(root, info), filesystem=pyarrow_fs(fs), columns=COLUMNS)
    return ds.map_batches(
        decode_rows,
        batch_format="pyarrow",
        batch_size=rows_per_block,
        fn_kwargs={"options": options, "folds": folds, "splits": splits, "seed": seed},
    )
