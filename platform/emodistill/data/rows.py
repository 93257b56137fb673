"""Dataset rows -> decoded clips, without Ray: the pieces the Ray Data reader maps over
shards, and :func:`load_arrays` for evaluation, benchmarks and machines without Ray."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emodistill.data.audio import decode_flac
from emodistill.data.batching import BatchOptions, prepare, ragged
from emodistill.data.schema import DatasetInfo, read_info, shard_uris
from emodistill.storage import S3Options, get_fs

COLUMNS = ["utterance_id", "audio", "num_samples", "label_id", "speaker", "fold", "split"]


def select_rows(table: pa.Table, folds: Sequence[int] | None, splits: Sequence[str] | None) -> pa.Table:
    """Rows of ``table`` in ``folds`` (or ``splits``); all rows when both are None."""
    if folds is not None:
        table = table.filter(pc.is_in(table["fold"], value_set=pa.array(list(folds), pa.int32())))
    if splits is not None:
        table = table.filter(pc.is_in(table["split"], value_set=pa.array(list(splits), pa.string())))
    return table


def decode_rows(
    table: pa.Table,
    options: BatchOptions,
    folds: Sequence[int] | None = None,
    splits: Sequence[str] | None = None,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Arrow rows -> decoded, prepared clips (a Ray Data ``map_batches`` function)."""
    table = select_rows(table, folds, splits)
    ids = table["utterance_id"].to_pylist()
    # With a seed, crops depend on the seed and the rows, not on the process or the order.
    rng = np.random.default_rng(None if seed is None else [seed, *(zlib.crc32(i.encode()) for i in ids[:1])])
    waves = [prepare(decode_flac(blob), options, rng) for blob in table["audio"].to_pylist()]
    labels = np.asarray(table["label_id"].to_pylist(), dtype=np.int64)
    order = np.argsort([w.size for w in waves], kind="stable") if options.bucket else np.arange(len(waves))
    return {
        "waveform": ragged([waves[i] for i in order]),
        "label_id": labels[order],
        "num_samples": np.asarray([waves[i].size for i in order], dtype=np.int64),
        "utterance_id": np.asarray([ids[i] for i in order], dtype=object),
    }


def check_selection(info: DatasetInfo, folds: Sequence[int] | None, splits: Sequence[str] | None, uri: str) -> None:
    if folds is not None:
        unknown = sorted(set(folds) - set(info.folds))
        if unknown:
            raise ValueError(f"{uri}: no folds {unknown}; the dataset has folds {info.folds}")
    if splits is not None:
        unknown = sorted(set(splits) - set(info.splits))
        if unknown:
            raise ValueError(f"{uri}: no splits {unknown}; the dataset has splits {info.splits or 'none'}")


def load_arrays(
    uri: str,
    *,
    folds: Sequence[int] | None = None,
    splits: Sequence[str] | None = None,
    options: BatchOptions | None = None,
    s3: S3Options | None = None,
) -> dict[str, np.ndarray]:
    """The same rows as :func:`read_dataset`, decoded in this process without Ray
    (evaluation of small sets, benchmarks, GPU machines that have no Ray)."""
    import pyarrow.parquet as pq

    options = options or BatchOptions(mode="full")
    info = read_info(uri, s3)
    check_selection(info, folds, splits, uri)
    fs, root = get_fs(uri, s3)
    parts = []
    for shard in shard_uris(root, info):
        with fs.open(shard, "rb") as fh:
            parts.append(decode_rows(pq.read_table(fh, columns=COLUMNS), options, folds, splits, seed=0))
    return {key: np.concatenate([p[key] for p in parts]) if parts else np.array([]) for key in parts[0]}
