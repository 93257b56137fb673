"""Dataset rows -> decoded clips, without Ray: the pieces the Ray Data reader maps over
shards, and :func:`load_arrays` for evaluation, benchmarks and machines without Ray.

Which rows: a :class:`~emodistill.data.folds.Part` (folds / splits / speakers). Random
crops are seeded per clip by ``(seed, epoch, utterance_id)`` (:func:`clip_rng`): the same
run crops the same windows in any process, worker count or row order, and every epoch
crops new ones.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from emodistill.data.audio import decode_flac
from emodistill.data.batching import BatchOptions, prepare, ragged
from emodistill.data.folds import Part, part_of
from emodistill.data.schema import read_info, shard_uris
from emodistill.storage import S3Options, get_fs

COLUMNS = ["utterance_id", "audio", "num_samples", "label_id", "speaker", "fold", "split"]


def clip_rng(seed: int | None, epoch: int, utterance_id: str) -> np.random.Generator:
    """The random generator of one clip in one epoch (unseeded when ``seed`` is None)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), zlib.crc32(str(utterance_id).encode())])


def prepare_clips(
    waves: Sequence[np.ndarray], ids: Sequence[str], options: BatchOptions, seed: int | None, epoch: int = 0
) -> list[np.ndarray]:
    """``prepare`` every clip (crop / full / fixed), each crop drawn by :func:`clip_rng`."""
    if options.mode != "crop":
        return [prepare(w, options) for w in waves]
    return [prepare(w, options, clip_rng(seed, epoch, uid)) for w, uid in zip(waves, ids)]


def decode_rows(
    table: pa.Table,
    options: BatchOptions,
    part: Part | dict | None = None,
    seed: int | None = None,
    epoch: int = 0,
) -> dict[str, np.ndarray]:
    """Arrow rows -> decoded, prepared clips (a Ray Data ``map_batches`` function).

    Rows outside ``part`` are dropped first. Returns ``{"waveform", "label_id",
    "num_samples", "utterance_id", "speaker"}``.
    """
    if part is not None:
        table = (part if isinstance(part, Part) else Part.model_validate(part)).filter(table)
    ids = table["utterance_id"].to_pylist()
    waves = prepare_clips([decode_flac(blob) for blob in table["audio"].to_pylist()], ids, options, seed, epoch)
    labels = np.asarray(table["label_id"].to_pylist(), dtype=np.int64)
    speakers = table["speaker"].to_pylist() if "speaker" in table.column_names else [""] * len(ids)
    order = np.argsort([w.size for w in waves], kind="stable") if options.bucket else np.arange(len(waves))
    return {
        "waveform": ragged([waves[i] for i in order]),
        "label_id": labels[order],
        "num_samples": np.asarray([waves[i].size for i in order], dtype=np.int64),
        "utterance_id": np.asarray([ids[i] for i in order], dtype=object),
        "speaker": np.asarray([speakers[i] for i in order], dtype=object),
    }


def load_arrays(
    uri: str,
    *,
    folds: Sequence[int] | None = None,
    splits: Sequence[str] | None = None,
    part: Part | None = None,
    options: BatchOptions | None = None,
    s3: S3Options | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The rows of ``part`` (or of ``folds``/``splits``), decoded in this process without
    Ray (evaluation of small sets, benchmarks, GPU machines that have no Ray)."""
    import pyarrow.parquet as pq

    options = options or BatchOptions(mode="full")
    part = part if part is not None else part_of(folds, splits)
    info = read_info(uri, s3)
    part.check(info, uri)
    fs, root = get_fs(uri, s3)
    parts = []
    for shard in shard_uris(root, info):
        with fs.open(shard, "rb") as fh:
            parts.append(decode_rows(pq.read_table(fh, columns=COLUMNS), options, part, seed=seed))
    return {key: np.concatenate([p[key] for p in parts]) if parts else np.array([]) for key in parts[0]}
