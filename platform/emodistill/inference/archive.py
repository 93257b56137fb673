"""An archive of recordings classified on Ray Data: `emodistill predict CKPT SRC --out DST`.

    SRC  a directory or s3:// prefix of audio files, or an ingested dataset (Parquet shards)
      -> ray.data (file names, or the dataset's rows)
      -> map_batches(ArchiveClassifier, ActorPoolStrategy(size=actors))   each actor holds the cut model
      -> DST/results/part-*.parquet   one row per clip, or per segment with --timeline
         DST/rejects/part-*.parquet   file, reason, message: every input that failed, and why
         DST/files/part-*.parquet     one row per input done (ok or rejected): what a re-run skips

The driver writes the parts as batches arrive (results, rejects, then the files part that
marks them done; a part without its files part is from an interrupted run and is removed),
so a re-run skips what is done and redoes only the rest. A corrupt file is a reject row and
the job goes on. Ray is only used here; the work of one batch (:class:`ArchiveClassifier`)
runs without Ray too.
"""

from __future__ import annotations

import io
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from emodistill.config import Config
from emodistill.storage import S3Options, get_fs, is_remote, join, write_bytes_atomic

TABLES = ("results", "rejects", "files")


class ArchiveConfig(Config):
    """A batch prediction job over an archive."""

    model: str = Field(..., description="Checkpoint or exported directory (local or s3://).")
    source: str = Field(..., description="Directory or s3:// prefix of audio files, or an ingested dataset (dataset.json).")
    out: str = Field(..., description="Where results/, rejects/ and files/ Parquet parts go (local or s3://).")
    exit: Optional[str] = Field(None, description="Exit to answer from, e.g. exit_3 (default: the deepest).")
    budget_ms: Optional[float] = Field(None, gt=0, description="Instead of exit: the deepest exit whose p95 fits this budget.")
    device: str = Field("cpu", description="cpu, cuda or cuda:<n> (cuda: each actor takes num_gpus).")
    precision: Optional[Literal["fp32", "bf16"]] = Field(None, description="Torch precision of a checkpoint (default fp32).")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads per actor (default: num_cpus).")
    actors: int = Field(1, ge=1, description="Ray Data actors holding the model (the actor pool's size).")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per actor.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (set with device=cuda).")
    files_per_batch: int = Field(4, ge=1, description="Inputs per map_batches call (one call's results are one write).")
    batch_size: int = Field(8, ge=1, description="Clips or segments per model call inside an actor.")
    timeline: bool = Field(False, description="Each input is a recording: one row per speech segment.")
    segment: Literal["vad", "fixed"] = Field("vad", description="Timeline segments: speech regions (vad) or fixed windows.")
    vad: Literal["silero", "energy"] = Field("silero", description="Voice-activity detector for segment=vad.")
    window: float = Field(3.0, gt=0, description="Timeline: seconds per window of long speech.")
    hop: float = Field(1.5, gt=0, description="Timeline: seconds between window starts.")
    min_seconds: float = Field(0.25, ge=0, description="Clips: shorter ones are rejected (too_short).")
    max_seconds: Optional[float] = Field(None, gt=0, description="Longer inputs are rejected (default: 30 s a clip, 24 h a recording).")
    retry_rejects: bool = Field(False, description="Re-run inputs a previous run rejected (else they count as done).")
    s3: S3Options = Field(default_factory=S3Options, description="S3 settings (else the AWS environment).")

    @model_validator(mode="after")
    def _one_choice(self) -> ArchiveConfig:
        if self.exit is not None and self.budget_ms is not None:
            raise ValueError("give exit or budget_ms, not both")
        if self.hop > self.window:
            raise ValueError(f"hop {self.hop:g} s is longer than window {self.window:g} s")
        return self


@dataclass
class ArchiveReport:
    inputs: int = 0
    skipped: int = 0  # done by an earlier run
    done: int = 0
    rejected: int = 0
    rows: int = 0
    seconds: float = 0.0  # audio seconds classified
    wall_s: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    out: str = ""

    def summary(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
        return (f"{self.done} of {self.inputs - self.skipped} inputs classified, {self.rejected} rejected"
                + (f" ({why})" if why else "") + f", {self.skipped} skipped (done before); {self.rows} result rows, "
                f"{self.seconds:.0f} s of audio in {self.wall_s:.1f} s -> {self.out}")


# ---- the work of one batch (no Ray) ----------------------------------------------------------


class ArchiveClassifier:
    """Holds the cut model; turns a batch of inputs into result, reject and file rows.

    Input batch: ``{"file": [...]}`` (URIs), or ``{"file": [...], "audio": [...]}`` (ids and
    16 kHz FLAC bytes of an ingested dataset). Output: one table with a ``kind`` column
    (result, reject, file) that the driver splits.
    """

    def __init__(self, config: dict):
        from emodistill.data.audio import AudioLimits
        from emodistill.inference.recognizer import EmotionRecognizer
        from emodistill.inference.segments import SegmentOptions
        from emodistill.inference.timeline import RECORDING_LIMITS

        cfg = self.cfg = ArchiveConfig.model_validate(config)
        threads = cfg.threads or max(1, int(cfg.num_cpus))
        if cfg.timeline:
            self.limits = RECORDING_LIMITS if cfg.max_seconds is None else AudioLimits(min_seconds=0.0, max_seconds=cfg.max_seconds)
        else:
            self.limits = AudioLimits(min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds or 30.0)
        self.recognizer = EmotionRecognizer.from_pretrained(
            cfg.model, exit=cfg.exit, budget_ms=cfg.budget_ms, device=cfg.device, precision=cfg.precision,
            threads=threads, budget_seconds=cfg.window, limits=self.limits,
        )
        self.options = SegmentOptions(segment=cfg.segment, vad=cfg.vad, window=cfg.window, hop=cfg.hop)
        self.labels = self.recognizer.labels

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        files = [str(f) for f in batch["file"]]
        audio = batch.get("audio")
        rows: list[dict] = []
        clips: list[tuple[str, np.ndarray]] = []
        for i, file in enumerate(files):
            data = None if audio is None else audio[i]
            try:
                if self.cfg.timeline:
                    rows += self._timeline(file, data)
                else:
                    clips.append((file, self._clip(file, data)))
            except Exception as err:  # noqa: BLE001 -- every failure of one input is a reject row, never the job's end
                rows += self._reject(file, err)
        for start in range(0, len(clips), self.cfg.batch_size):
            group = clips[start: start + self.cfg.batch_size]
            try:
                preds = self.recognizer.predict_waves([w for _, w in group])
            except Exception as err:  # noqa: BLE001
                for file, _ in group:
                    rows += self._reject(file, err, code="model_error")
                continue
            for (file, wave), p in zip(group, preds):
                rows.append({"kind": "result", "file": file, "label": p.label, "exit": p.exit, "seconds": p.seconds,
                             "latency_ms": round(p.latency_ms / len(group), 3), **self._scores(p.scores)})
                rows.append({"kind": "file", "file": file, "status": "ok", "segments": 1, "seconds": p.seconds})
        return rows_table(rows, self.labels)

    def _read(self, file: str) -> bytes:
        from emodistill.data.audio import AudioError

        fs, path = get_fs(file, self.cfg.s3)
        try:
            with fs.open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError as err:
            raise AudioError("not_found", f"no such file: {file}") from err

    def _clip(self, file: str, data: bytes | None) -> np.ndarray:
        from emodistill.data.audio import decode_clip

        return decode_clip(self._read(file) if data is None else bytes(data), self.limits)

    def _timeline(self, file: str, data: bytes | None) -> list[dict]:
        from emodistill.inference.timeline import Timeline, iter_timeline

        state = Timeline(source=file, labels=self.labels, exit=self.recognizer.exit)
        rows: list[dict] = []
        if data is None:
            fs, path = get_fs(file, self.cfg.s3)
            try:
                fh = fs.open(path, "rb")
            except FileNotFoundError:
                from emodistill.data.audio import AudioError

                raise AudioError("not_found", f"no such file: {file}") from None
            source: Any = fh
        else:
            fh, source = None, bytes(data)
        try:
            for k, seg in enumerate(iter_timeline(self.recognizer, source, self.options, self.limits, self.cfg.batch_size, state=state)):
                rows.append({"kind": "result", "file": file, "segment": k, "start": seg.start, "end": seg.end, "label": seg.label,
                             "exit": seg.exit, "seconds": round(seg.end - seg.start, 3), "latency_ms": seg.latency_ms,
                             **self._scores(seg.scores)})
        finally:
            if fh is not None:
                fh.close()
        rows.append({"kind": "file", "file": file, "status": "ok", "segments": len(rows), "seconds": state.duration})
        return rows

    def _scores(self, scores: dict[str, float]) -> dict[str, float]:
        return {f"score_{label}": scores[label] for label in self.labels}

    @staticmethod
    def _reject(file: str, err: Exception, code: str | None = None) -> list[dict]:
        from emodistill.data.audio import AudioError

        if code is None:
            code = err.reason if isinstance(err, AudioError) else ("unreadable" if isinstance(err, OSError) else "model_error")
        message = (str(err).splitlines() or [type(err).__name__])[0][:300]
        return [{"kind": "reject", "file": file, "reason": code, "message": message},
                {"kind": "file", "file": file, "status": "rejected", "segments": 0, "seconds": 0.0, "reason": code}]


def rows_table(rows: list[dict], labels: list[str]) -> pa.Table:
    """The actor's output rows as one table of a fixed schema (None where a kind has no value)."""
    schema = output_schema(labels)
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def output_schema(labels: list[str]) -> pa.Schema:
    return pa.schema([
        ("kind", pa.string()), ("file", pa.string()), ("segment", pa.int32()), ("start", pa.float64()), ("end", pa.float64()),
        ("label", pa.string()), ("exit", pa.string()), ("seconds", pa.float64()), ("latency_ms", pa.float64()),
        *[(f"score_{label}", pa.float64()) for label in labels],
        ("status", pa.string()), ("segments", pa.int32()), ("reason", pa.string()), ("message", pa.string()),
    ])


def table_columns(kind: str, timeline: bool, labels: list[str]) -> list[str]:
    """The columns each written table keeps."""
    if kind == "results":
        head = ["file", "segment", "start", "end"] if timeline else ["file"]
        return [*head, "label", "exit", "seconds", "latency_ms", *[f"score_{label}" for label in labels]]
    if kind == "rejects":
        return ["file", "reason", "message"]
    return ["file", "status", "reason", "segments", "seconds"]


# ---- inputs, what is done, writing ------------------------------------------------------------


def list_audio(source: str, s3: S3Options | None = None) -> list[str]:
    """Audio files under a directory or prefix (sorted URIs); a single file is itself."""
    from emodistill.inference.files import AUDIO_SUFFIXES

    fs, path = get_fs(source, s3)
    if fs.isfile(path):
        return [source]
    if not fs.isdir(path):
        raise FileNotFoundError(f"no such directory or prefix: {source}")
    found = sorted(p for p in fs.find(path) if os.path.splitext(p)[1].lower() in AUDIO_SUFFIXES)
    proto = source.split("://", 1)[0] + "://" if is_remote(source) else ""
    return [proto + p if proto and not p.startswith(proto) else p for p in found]


def is_dataset(source: str, s3: S3Options | None = None) -> bool:
    from emodistill.data.schema import INFO_FILE

    fs, path = get_fs(source, s3)
    return fs.isfile(join(path, INFO_FILE))


def read_done(out: str, s3: S3Options | None, retry_rejects: bool = False) -> set[str]:
    """Inputs done by earlier runs (their files/ parts), after removing the parts of an
    interrupted write (results or rejects without the files part that commits them)."""
    fs, root = get_fs(out, s3)
    parts = {t: set() for t in TABLES}
    for t in TABLES:
        d = join(root, t)
        if fs.isdir(d):
            parts[t] = {os.path.basename(p) for p in fs.ls(d, detail=False) if p.endswith(".parquet")}
    for t in ("results", "rejects"):
        for name in parts[t] - parts["files"]:
            fs.rm(join(root, t, name))
    done: set[str] = set()
    for name in sorted(parts["files"]):
        with fs.open(join(root, "files", name), "rb") as fh:
            table = pq.read_table(fh, columns=["file", "status"])
        for f, status in zip(table.column("file").to_pylist(), table.column("status").to_pylist()):
            if status == "ok" or not retry_rejects:
                done.add(f)
    return done


class PartWriter:
    """Writes a batch's results, rejects and files parts (in that order: the files part
    commits the other two)."""

    def __init__(self, cfg: ArchiveConfig, labels: list[str]):
        self.cfg = cfg
        self.labels = labels
        self.fs, self.root = get_fs(cfg.out, cfg.s3)
        self.run = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.seq = 0
        for t in TABLES:
            self.fs.makedirs(join(self.root, t), exist_ok=True)

    def write(self, table: pa.Table) -> dict[str, pa.Table]:
        kinds = table.column("kind")
        out = {}
        name = f"part-{self.run}-{self.seq:05d}.parquet"
        for t, kind in (("results", "result"), ("rejects", "reject"), ("files", "file")):
            sub = table.filter(pc.equal(kinds, kind)).select(table_columns(t, self.cfg.timeline, self.labels))
            out[t] = sub
            if sub.num_rows:
                buf = io.BytesIO()
                pq.write_table(sub, buf)
                write_bytes_atomic(self.fs, join(self.root, t, name), buf.getvalue())
        self.seq += 1
        return out


def read_table(out: str, table: str, s3: S3Options | None = None) -> pa.Table | None:
    """All parts of one output table (results, rejects or files), or None when there are none."""
    fs, root = get_fs(out, s3)
    d = join(root, table)
    if not fs.isdir(d):
        return None
    tables = []
    for p in sorted(fs.ls(d, detail=False)):
        if p.endswith(".parquet"):
            with fs.open(p, "rb") as fh:
                tables.append(pq.read_table(fh))
    return pa.concat_tables(tables, promote_options="default") if tables else None


# ---- the job ------------------------------------------------------------------------------


def run_archive(cfg: ArchiveConfig, progress: bool = True) -> ArchiveReport:
    """Classify every input of ``cfg.source`` not done yet; write results and rejects."""
    import ray
    import ray.data

    from emodistill.cluster import init_ray

    started = time.perf_counter()
    s3 = _resolved(cfg.s3)
    cfg = cfg.model_copy(update={"s3": s3})
    labels = _labels(cfg)
    done = read_done(cfg.out, s3, cfg.retry_rejects)
    init_ray(quiet=True)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our summary line, not the executor's
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    if is_dataset(cfg.source, s3):
        from emodistill.data.schema import read_info, shard_uris
        from emodistill.storage import pyarrow_fs

        info = read_info(cfg.source, s3)
        fs, _ = get_fs(cfg.source, s3)
        ids = pq_ids(cfg.source, info, s3)
        todo_ids = [i for i in ids if i not in done]
        report = ArchiveReport(inputs=len(ids), skipped=len(ids) - len(todo_ids), out=cfg.out)
        if not todo_ids:
            report.wall_s = round(time.perf_counter() - started, 2)
            return report
        uris = [u.split("://", 1)[1] if is_remote(u) else os.path.abspath(u) for u in shard_uris(cfg.source, info)]
        ds = ray.data.read_parquet(uris, filesystem=pyarrow_fs(fs), columns=["utterance_id", "audio"])
        ds = ds.rename_columns({"utterance_id": "file"})
        if done:
            skip = set(done)
            ds = ds.filter(lambda row: row["file"] not in skip)
    else:
        files = list_audio(cfg.source, s3)
        todo = [f for f in files if f not in done]
        report = ArchiveReport(inputs=len(files), skipped=len(files) - len(todo), out=cfg.out)
        if not todo:
            report.wall_s = round(time.perf_counter() - started, 2)
            return report
        ds = ray.data.from_items([{"file": f} for f in todo], override_num_blocks=max(1, min(len(todo), 4 * cfg.actors)))
    ds = ds.map_batches(
        ArchiveClassifier,
        fn_constructor_kwargs={"config": cfg.model_dump()},
        batch_size=cfg.files_per_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.actors),
        num_cpus=cfg.num_cpus,
        num_gpus=cfg.num_gpus or None,
    )
    writer = PartWriter(cfg, labels)
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        written = writer.write(batch)
        files = written["files"]
        report.rows += written["results"].num_rows
        for status, reason, seconds in zip(files.column("status").to_pylist(), files.column("reason").to_pylist(),
                                           files.column("seconds").to_pylist()):
            if status == "ok":
                report.done += 1
                report.seconds += seconds or 0.0
            else:
                report.rejected += 1
                report.reasons[reason] = report.reasons.get(reason, 0) + 1
    report.wall_s = round(time.perf_counter() - started, 2)
    return report


def pq_ids(source: str, info, s3: S3Options | None) -> list[str]:
    from emodistill.data.schema import shard_uris

    ids: list[str] = []
    for uri in shard_uris(source, info):
        fs, path = get_fs(uri, s3)
        with fs.open(path, "rb") as fh:
            ids += pq.read_table(fh, columns=["utterance_id"]).column("utterance_id").to_pylist()
    return ids


def _labels(cfg: ArchiveConfig) -> list[str]:
    """The model's labels without loading it (the checkpoint or export says)."""
    from emodistill.checkpoint import read_checkpoint_config
    from emodistill.inference.package import kind_of, read_export

    if kind_of(cfg.model) == "checkpoint":
        return list(read_checkpoint_config(cfg.model).model.labels)
    return list(read_export(cfg.model)[0].labels)


def _resolved(s3: S3Options) -> S3Options:
    """Settings from this process's environment made explicit, so actors (whose environment
    may differ) reach the same endpoint."""
    return S3Options(
        endpoint_url=s3.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3"),
        key=s3.key or os.environ.get("AWS_ACCESS_KEY_ID"),
        secret=s3.secret or os.environ.get("AWS_SECRET_ACCESS_KEY"),
        region=s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
    )


__all__ = ["ArchiveClassifier", "ArchiveConfig", "ArchiveReport", "list_audio", "read_done", "read_table", "run_archive"]
