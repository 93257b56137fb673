"""The archive job on a real local Ray cluster (Ray Data, an actor pool): local files and
moto's S3 server, one row per clip or per segment, corrupt files as reject rows, re-runs
that skip what is done, an ingested dataset as input."""

from __future__ import annotations

import pytest

from conftest import tiny_model, tone, write_audio

pytestmark = pytest.mark.slow

CORRUPT = b"RIFF\x24\x00\x00\x00WAVEfmt garbage"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from emodistill.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("archive-model") / "checkpoint"
    save_checkpoint(tiny_model(exits=(1, 2, 3), student_head="mean"), path, metadata={})
    return str(path)


def make_archive(root):
    for i in range(4):
        write_audio(root / "calls" / f"day{i % 2}" / f"c{i}.wav", tone(1.0 + 0.5 * i, freq=150 + 40 * i, seed=i))
    (root / "calls" / "day1" / "corrupt.wav").write_bytes(CORRUPT)
    (root / "calls" / "notes.txt").write_text("not audio")
    return root / "calls"


def test_local_archive_clips_rejects_and_a_rerun(ray_local, checkpoint, tmp_path):
    from emodistill.inference.archive import ArchiveConfig, read_table, run_archive

    src = make_archive(tmp_path)
    cfg = ArchiveConfig(model=checkpoint, source=str(src), out=str(tmp_path / "out"), exit="exit_2", actors=1, files_per_batch=2)
    report = run_archive(cfg, progress=False)
    assert (report.inputs, report.done, report.rejected, report.skipped) == (5, 4, 1, 0)
    results = read_table(cfg.out, "results").to_pylist()
    assert sorted(r["file"].rsplit("/", 1)[1] for r in results) == ["c0.wav", "c1.wav", "c2.wav", "c3.wav"]
    for r in results:
        assert r["exit"] == "exit_2" and abs(sum(r[f"score_{l}"] for l in ("anger", "happiness", "neutral", "sadness")) - 1) < 1e-4
    rejects = read_table(cfg.out, "rejects").to_pylist()
    assert [(r["file"].rsplit("/", 1)[1], r["reason"]) for r in rejects] == [("corrupt.wav", "unreadable")] and rejects[0]["message"]

    write_audio(src / "day0" / "new.wav", tone(1.2, freq=200))  # a file added since
    again = run_archive(cfg, progress=False)
    assert (again.inputs, again.skipped, again.done, again.rejected) == (6, 5, 1, 0)
    assert len(read_table(cfg.out, "results")) == 5


def test_s3_archive_with_timelines(ray_local, checkpoint, s3, tmp_path):
    import s3fs

    from emodistill.inference.archive import ArchiveConfig, read_table, run_archive
    from emodistill.storage import S3Options

    src = make_archive(tmp_path)
    write_audio(src / "long" / "call.wav", __import__("numpy").concatenate([tone(4.0), tone(1.0) * 0, tone(2.0)]))
    fs = s3fs.S3FileSystem(**S3Options().storage_options())
    fs.put(str(src), f"{s3[5:]}/calls", recursive=True)
    cfg = ArchiveConfig(model=checkpoint, source=f"{s3}/calls", out=f"{s3}/emotions", timeline=True, vad="energy", actors=2)
    report = run_archive(cfg, progress=False)
    assert (report.inputs, report.done, report.rejected) == (6, 5, 1)
    results = read_table(cfg.out, "results", S3Options()).to_pandas()
    long = results[results.file.str.endswith("call.wav")].sort_values("start")
    assert len(long) >= 3 and (long.end > long.start).all() and long.segment.tolist() == list(range(len(long)))
    assert set(results.exit) == {"exit_4"}  # the deepest (the teacher)
    rejects = read_table(cfg.out, "rejects", S3Options()).to_pylist()
    assert [r["reason"] for r in rejects] == ["unreadable"] and rejects[0]["file"].startswith("s3://")
    assert run_archive(cfg, progress=False).skipped == 6


def test_ingested_dataset_as_input(ray_local, checkpoint, tiny_dataset, tmp_path):
    import pyarrow.parquet as pq

    from emodistill.data.schema import read_info, shard_uris
    from emodistill.inference.archive import ArchiveConfig, read_table, run_archive

    ids = sorted(i for u in shard_uris(tiny_dataset, read_info(tiny_dataset)) for i in pq.read_table(u).column("utterance_id").to_pylist())
    cfg = ArchiveConfig(model=checkpoint, source=tiny_dataset, out=str(tmp_path / "out"), exit="exit_1")
    report = run_archive(cfg, progress=False)
    assert report.done == len(ids) and report.rejected == 0
    assert sorted(read_table(cfg.out, "results").column("file").to_pylist()) == ids


def test_an_interrupted_write_is_redone(checkpoint, tmp_path):
    """A results part without the files part that commits it is removed; its inputs count as not done."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from emodistill.inference.archive import read_done

    out = tmp_path / "out"
    for t in ("results", "files"):
        (out / t).mkdir(parents=True)
    pq.write_table(pa.table({"file": ["a.wav"], "status": ["ok"]}), out / "files" / "part-1.parquet")
    pq.write_table(pa.table({"file": ["a.wav"]}), out / "results" / "part-1.parquet")
    pq.write_table(pa.table({"file": ["b.wav"]}), out / "results" / "part-2.parquet")
    assert read_done(str(out), None) == {"a.wav"}
    assert sorted(p.name for p in (out / "results").iterdir()) == ["part-1.parquet"]
