"""`emodistill ingest SOURCE DEST`: a corpus in its own layout -> the Parquet dataset.

    discover (adapter)  -> SourceItems with label, speaker, split/fold
    map labels          -> --labels merges or drops classes
    decode + check      -> in parallel over cores: read, sha256, decode, mono, 16 kHz, limits
    deduplicate         -> identical source bytes are kept once (first path wins)
    folds               -> the corpus' own folds, else speaker-independent k-fold by seed
    order               -> rows in a seeded random order (never the corpus' session/dialog order)
    write               -> shards (bounded size, atomic), rejects.csv, dataset.json last

Nothing is lost: every audio file seen ends up as a row or as a line of rejects.csv with
its reason, and ``rows + rejects == files seen`` is checked before dataset.json is
written. Re-running on the same input gives the same ids and byte-identical shards.
"""

from __future__ import annotations

import csv
import hashlib
import io
import multiprocessing
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from emodistill.config import Config, load_yaml
from emodistill.data import audio
from emodistill.data.corpora import FORMATS, SourceItem, get_corpus
from emodistill.data.schema import ARROW_SCHEMA, INFO_FILE, REJECTS_FILE, SCHEMA_VERSION, DatasetInfo, ShardInfo
from emodistill.storage import S3Options, get_fs, is_remote, join, write_bytes_atomic

# Named --labels mappings (canonical corpus labels -> dataset labels; absent = dropped).
LABEL_PRESETS: dict[str, dict[str, str | None]] = {
    # The usual IEMOCAP 4-class set: excited merged into happy, everything else dropped.
    "iemocap4": {"neutral": "neutral", "happy": "happy", "excited": "happy", "angry": "angry", "sad": "sad"},
    # The four classes most corpora share.
    "basic4": {"neutral": "neutral", "happy": "happy", "angry": "angry", "sad": "sad"},
}


class IngestConfig(Config):
    """Everything `ingest` needs; the CLI flags map one to one."""

    source: str = Field(description="Corpus root: local directory or s3:// prefix.")
    dest: str = Field(description="Dataset directory or s3:// prefix to write.")
    format: str = Field("auto", description=f"Corpus layout: one of {FORMATS}.")
    labels: dict[str, str | None] | None = Field(
        None, description="Label mapping corpus label -> dataset label (None = drop); labels absent are dropped."
    )
    folds: int = Field(5, ge=2, description="Speaker-independent folds to assign when the corpus defines none.")
    seed: int = Field(0, description="Seed of the fold assignment.")
    min_seconds: float = Field(0.25, gt=0, description="Shorter clips are rejected (too_short).")
    max_seconds: float = Field(30.0, gt=0, description="Longer clips are rejected (too_long).")
    silence_peak: float = Field(1e-4, ge=0, description="Clips whose peak stays below this are rejected (silent).")
    shard_mb: float = Field(128.0, gt=0, description="Target shard size in MB (a shard closes once it passes this).")
    workers: int | None = Field(None, ge=1, description="Decode processes (default: all cores).")
    s3: S3Options = Field(default_factory=S3Options, description="S3 settings (else the AWS environment).")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"unknown format {value!r}; choose one of {FORMATS}")
        return value


def parse_label_mapping(text: str | None) -> dict[str, str | None] | None:
    """``--labels``: a preset name, a YAML file, or inline ``a=x,b=x,c=-`` (``-`` drops)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text in LABEL_PRESETS:
        return dict(LABEL_PRESETS[text])
    if os.path.isfile(text):
        with open(text) as fh:
            loaded = load_yaml(fh.read())
        if not isinstance(loaded, dict):
            raise ValueError(f"{text}: expected a mapping label -> label")
        return {str(k).lower(): (None if v in (None, "-") else str(v)) for k, v in loaded.items()}
    mapping: dict[str, str | None] = {}
    for part in text.split(","):
        if "=" not in part:
            raise ValueError(
                f"--labels: {part!r} is not of the form from=to; give a preset ({', '.join(LABEL_PRESETS)}), "
                "a YAML file, or from=to pairs separated by commas ('-' drops)"
            )
        src, _, dst = part.partition("=")
        dst = dst.strip()
        mapping[src.strip().lower()] = None if dst in ("", "-") else dst
    return mapping


@dataclass
class Reject:
    source: str
    reason: str
    message: str


@dataclass
class IngestReport:
    dest: str
    info: DatasetInfo
    rejects: list[Reject] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"{self.info.num_rows} rows + {len(self.rejects)} rejected = {self.info.files_seen} files seen",
            f"dataset: {self.dest} ({len(self.info.shards)} shards, {self.info.total_seconds / 60:.1f} min of audio, "
            f"labels {self.info.labels})",
        ]
        if self.rejects:
            by_reason = Counter(r.reason for r in self.rejects)
            lines.append("rejected: " + ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items())))
            lines.append(f"reasons per file: {join(self.dest, REJECTS_FILE)}")
        return "\n".join(lines)


# ---- the per-file work, run in worker processes ----------------------------------------


@dataclass
class _Decoded:
    sha256: str
    flac: bytes
    num_samples: int


def _process(args: tuple) -> _Decoded | Reject:
    """Read, hash, decode, check, re-encode one file. Never raises: failures are Rejects."""
    fs, path, limits = args
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return Reject(path, "missing", "file disappeared or cannot be found")
    except OSError as err:
        return Reject(path, "unreadable", f"cannot read file: {err}")
    if not data:
        return Reject(path, "empty", "file is empty (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    try:
        wave = audio.decode_clip(data, limits)  # header limits, capped decoding, then the checks
    except audio.AudioError as err:
        return Reject(path, err.reason, str(err))
    return _Decoded(sha256=digest, flac=audio.encode_flac(wave), num_samples=int(wave.size))


def _map_parallel(tasks: list[tuple], workers: int, progress: bool, remote: bool) -> list:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="ingest", unit="file", disable=not progress, file=sys.stderr)
    results = []
    try:
        if workers <= 1 or len(tasks) < 8:
            for task in tasks:
                results.append(_process(task))
                bar.update()
        else:
            # s3fs holds an event loop and threads that do not survive fork: spawn for
            # remote sources; fork (no re-import, much faster start) for local ones.
            context = multiprocessing.get_context("spawn" if remote else "fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                for result in pool.map(_process, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers)))):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()
    return results


# ---- the pipeline ---------------------------------------------------------------------


def ingest(cfg: IngestConfig, progress: bool = True) -> IngestReport:
    src_fs, src_root = get_fs(cfg.source, cfg.s3)
    if not src_fs.exists(src_root):
        raise FileNotFoundError(f"source {cfg.source} does not exist")
    corpus = get_corpus(cfg.format, src_fs, src_root)
    items = sorted(corpus.discover(src_fs, src_root), key=lambda it: it.relpath)
    if not items:
        raise ValueError(f"no audio files found under {cfg.source} (format {corpus.name})")

    rejects: list[Reject] = []
    usable: list[tuple[SourceItem, str]] = []
    for item in items:
        label = _final_label(item, cfg.labels, rejects)
        if label is not None:
            usable.append((item, label))

    limits = audio.AudioLimits(cfg.min_seconds, cfg.max_seconds, cfg.silence_peak)
    tasks = [(src_fs, item.path, limits) for item, _ in usable]
    results = _map_parallel(tasks, cfg.workers or os.cpu_count() or 1, progress, is_remote(cfg.source))

    rows: list[dict] = []
    first_of: dict[str, str] = {}
    for (item, label), result in zip(usable, results):
        if isinstance(result, Reject):
            rejects.append(Reject(item.path, result.reason, result.message))
            continue
        if result.sha256 in first_of:
            rejects.append(Reject(item.path, "duplicate", f"same content as {first_of[result.sha256]}"))
            continue
        first_of[result.sha256] = item.path
        rows.append(_row(item, label, result))

    if not rows:
        raise ValueError(f"every one of the {len(items)} files was rejected; first: {rejects[0].reason}: {rejects[0].message}")
    if len(rows) + len(rejects) != len(items):  # the invariant that nothing is lost
        raise AssertionError(f"{len(rows)} rows + {len(rejects)} rejects != {len(items)} files seen")

    labels = sorted({r["label"] for r in rows})
    label_id = {name: i for i, name in enumerate(labels)}
    for r in rows:
        r["label_id"] = label_id[r["label"]]
    speaker_folds, fold_source, num_folds = _folds(rows, cfg)
    rows.sort(key=lambda r: row_order_key(r["utterance_id"], cfg.seed))
    return _write(cfg, corpus.name, rows, rejects, labels, speaker_folds, fold_source, num_folds, len(items))


def row_order_key(utterance_id: str, seed: int) -> str:
    """Where a row goes in the shards: a seeded hash of its id. Rows of one session or
    dialog (neighbours in the corpus' own order, alike in speaker and emotion) land far
    apart, so a shard's blocks are mixed; the same input and seed give the same order."""
    return hashlib.sha256(f"{seed}:{utterance_id}".encode()).hexdigest()


def _final_label(item: SourceItem, mapping: dict[str, str | None] | None, rejects: list[Reject]) -> str | None:
    if item.problem:
        reason, _, message = item.problem.partition(": ")
        rejects.append(Reject(item.path, reason, message or reason))
        return None
    label = item.label or ""
    if mapping is None:
        return label
    if label not in mapping or mapping[label] is None:
        rejects.append(Reject(item.path, "dropped_label", f"label {label!r} is dropped by the --labels mapping"))
        return None
    return mapping[label]


def _row(item: SourceItem, label: str, decoded: _Decoded) -> dict:
    stem = item.relpath.rsplit(".", 1)[0]
    return {
        "utterance_id": f"{item.corpus}/{stem}",
        "audio": decoded.flac,
        "num_samples": decoded.num_samples,
        "sample_rate": audio.SAMPLE_RATE,
        "duration": decoded.num_samples / audio.SAMPLE_RATE,
        "label": label,
        "label_id": -1,
        "speaker": item.speaker,
        "corpus": item.corpus,
        "fold": item.fold,
        "split": item.split,
        "source": item.path,
        "sha256": decoded.sha256,
    }


def _folds(rows: list[dict], cfg: IngestConfig) -> tuple[dict[str, int], str, int]:
    from emodistill.data.folds import assign_folds

    given = {r["fold"] for r in rows}
    if None not in given:  # the corpus defines folds (e.g. IEMOCAP sessions): keep them
        speaker_folds: dict[str, int] = {}
        for r in rows:
            if speaker_folds.setdefault(r["speaker"], r["fold"]) != r["fold"]:
                raise ValueError(f"speaker {r['speaker']} appears in folds {speaker_folds[r['speaker']]} and {r['fold']}")
        return dict(sorted(speaker_folds.items())), "corpus", len(given)
    counts = Counter(r["speaker"] for r in rows)
    speaker_folds = assign_folds(dict(counts), cfg.folds, cfg.seed)
    for r in rows:
        r["fold"] = speaker_folds[r["speaker"]]
    return speaker_folds, "speakers", cfg.folds


def _shard_groups(rows: list[dict], shard_bytes: int) -> Iterable[list[dict]]:
    group: list[dict] = []
    size = 0
    for r in rows:
        group.append(r)
        size += len(r["audio"]) + 256
        if size >= shard_bytes:
            yield group
            group, size = [], 0
    if group:
        yield group


def _write(cfg, fmt, rows, rejects, labels, speaker_folds, fold_source, num_folds, files_seen) -> IngestReport:
    fs, root = get_fs(cfg.dest, cfg.s3)
    fs.makedirs(root, exist_ok=True)
    old = {p.rsplit("/", 1)[-1] for p in fs.glob(join(root, "part-*.parquet"))}

    shards: list[ShardInfo] = []
    for index, group in enumerate(_shard_groups(rows, int(cfg.shard_mb * 1e6))):
        table = pa.Table.from_pylist(group, schema=ARROW_SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=64, compression="zstd")
        data = buf.getvalue()
        name = f"part-{index:05d}-{hashlib.sha256(data).hexdigest()[:12]}.parquet"
        write_bytes_atomic(fs, join(root, name), data)
        shards.append(ShardInfo(name=name, rows=len(group), bytes=len(data)))

    rejects.sort(key=lambda r: r.source)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["source", "reason", "message"])
    writer.writerows([r.source, r.reason, r.message] for r in rejects)
    write_bytes_atomic(fs, join(root, REJECTS_FILE), text.getvalue().encode())

    by_fold: dict[str, Counter] = defaultdict(Counter)
    by_split: dict[str, Counter] = defaultdict(Counter)
    by_speaker: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        by_fold[str(r["fold"])][r["label"]] += 1
        by_speaker[r["speaker"]][r["label"]] += 1
        if r["split"] is not None:
            by_split[r["split"]][r["label"]] += 1
    info = DatasetInfo(
        schema_version=SCHEMA_VERSION,
        labels=labels,
        sample_rate=audio.SAMPLE_RATE,
        shards=shards,
        num_rows=len(rows),
        total_seconds=round(sum(r["duration"] for r in rows), 3),
        num_folds=num_folds,
        fold_source=fold_source,
        speaker_folds=speaker_folds,
        counts_by_fold={k: dict(sorted(v.items())) for k, v in sorted(by_fold.items(), key=lambda kv: int(kv[0]))},
        counts_by_split={k: dict(sorted(v.items())) for k, v in sorted(by_split.items())},
        counts_by_speaker={k: dict(sorted(v.items())) for k, v in sorted(by_speaker.items())},
        source=cfg.source,
        format=fmt,
        label_mapping=cfg.labels,
        seed=cfg.seed,
        files_seen=files_seen,
        rejected=len(rejects),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_bytes_atomic(fs, join(root, INFO_FILE), (info.model_dump_json(indent=2) + "\n").encode())
    for stale in old - {s.name for s in shards}:  # shards of an earlier dataset at this place
        fs.rm(join(root, stale))
    return IngestReport(dest=cfg.dest, info=info, rejects=rejects)

