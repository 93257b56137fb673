"""The dataset contract: what `ingest` writes and everything downstream reads.

A dataset is a directory or ``s3://bucket/prefix`` holding

    part-00000-<digest>.parquet ...   one row per utterance (ARROW_SCHEMA), bounded size
    dataset.json                      DatasetInfo: labels, shard list, counts, provenance
    rejects.csv                       source,reason,message for every file not ingested

``dataset.json`` is written last and lists the shards: readers take the shards it names,
so a crash mid-ingest (or a re-ingest in progress) never shows a partial dataset.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from pydantic import Field

from emodistill.config import Config
from emodistill.storage import S3Options, get_fs, join

SCHEMA_VERSION = 1
INFO_FILE = "dataset.json"
REJECTS_FILE = "rejects.csv"

ARROW_SCHEMA = pa.schema(
    [
        pa.field("utterance_id", pa.string(), nullable=False),  # "<corpus>/<path without extension>"
        pa.field("audio", pa.binary(), nullable=False),  # 16-bit FLAC, mono, `sample_rate`
        pa.field("num_samples", pa.int64(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("duration", pa.float32(), nullable=False),  # seconds
        pa.field("label", pa.string(), nullable=False),
        pa.field("label_id", pa.int32(), nullable=False),  # index into DatasetInfo.labels
        pa.field("speaker", pa.string(), nullable=False),
        pa.field("corpus", pa.string(), nullable=False),
        pa.field("fold", pa.int32(), nullable=True),  # speaker-independent fold
        pa.field("split", pa.string(), nullable=True),  # the corpus' own split, if it has one
        pa.field("source", pa.string(), nullable=False),  # original file path / URI
        pa.field("sha256", pa.string(), nullable=False),  # of the original file's bytes
    ]
)


class ShardInfo(Config):
    """One Parquet shard of the dataset."""

    name: str = Field(description="File name within the dataset directory.")
    rows: int = Field(description="Utterances in the shard.")
    bytes: int = Field(description="Size of the file.")


class DatasetInfo(Config):
    """Contents of dataset.json."""

    schema_version: int = Field(SCHEMA_VERSION, description="Version of this contract.")
    labels: list[str] = Field(description="Label names; label_id indexes this list.")
    sample_rate: int = Field(16000, description="Sample rate of every stored clip, Hz.")
    shards: list[ShardInfo] = Field(description="The shards that make up the dataset, in order.")
    num_rows: int = Field(description="Total utterances.")
    total_seconds: float = Field(description="Total duration of stored audio, seconds.")
    num_folds: int = Field(description="Number of speaker-independent folds (0 when the corpus has splits only).")
    fold_source: str = Field(description="'corpus' when folds come from the corpus, else 'speakers' (assigned by seed).")
    speaker_folds: dict[str, int] = Field(default_factory=dict, description="Speaker -> fold.")
    counts_by_fold: dict[str, dict[str, int]] = Field(default_factory=dict, description="Fold -> label -> rows.")
    counts_by_split: dict[str, dict[str, int]] = Field(default_factory=dict, description="Split -> label -> rows.")
    counts_by_speaker: dict[str, dict[str, int]] = Field(default_factory=dict, description="Speaker -> label -> rows.")
    source: str = Field(description="Where the corpus was read from.")
    format: str = Field(description="Corpus adapter used (csv, ravdess, ...).")
    label_mapping: dict[str, str | None] | None = Field(None, description="--labels mapping applied, if any.")
    seed: int = Field(0, description="Seed of the fold assignment.")
    files_seen: int = Field(description="Audio files found in the source.")
    rejected: int = Field(description="Files not ingested (listed in rejects.csv).")
    created_at: str = Field(description="UTC time the dataset was written (ISO 8601).")

    @property
    def folds(self) -> list[int]:
        return sorted(int(f) for f in self.counts_by_fold)

    @property
    def splits(self) -> list[str]:
        return sorted(self.counts_by_split)


def read_info(uri: str, s3: S3Options | None = None) -> DatasetInfo:
    """Read and validate ``dataset.json`` of the dataset at ``uri``."""
    fs, path = get_fs(uri, s3)
    info_path = join(path, INFO_FILE)
    try:
        raw = fs.cat_file(info_path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no dataset at {uri}: {INFO_FILE} is missing (run `emodistill ingest`)") from err
    data: dict[str, Any] = json.loads(raw)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{uri}: dataset schema_version {data.get('schema_version')} != {SCHEMA_VERSION}")
    return DatasetInfo.model_validate(data)


def shard_uris(uri: str, info: DatasetInfo) -> list[str]:
    return [join(str(uri), shard.name) for shard in info.shards]
