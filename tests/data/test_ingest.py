"""ingest: a csv corpus with planted bad files -> shards, rejects, folds; local and S3."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from conftest import tone, write_audio
from emodistill.data.audio import decode_flac
from emodistill.data.ingest import IngestConfig, ingest, parse_label_mapping, row_order_key
from emodistill.data.rows import load_arrays
from emodistill.serve import hostile
from emodistill.data.schema import ARROW_SCHEMA, read_info

LABELS = {"angry": 330.0, "happy": 260.0, "sad": 150.0}
MAPPING = {"angry": "angry", "happy": "happy", "excited": "happy", "sad": "sad"}
BAD = {
    "zbad/corrupt.wav": "unreadable",
    "zbad/empty.wav": "empty",
    "zbad/silent.wav": "silent",
    "zbad/nan.wav": "non_finite",
    "zbad/short.wav": "too_short",
    "zbad/long.wav": "too_long",
    "zbad/rate_1hz.wav": "sample_rate",  # a header that lies: 30 frames that resample to 30 s
    "zbad/lying.flac": "sample_rate",  # 655,350 Hz x 8 channels
    "zbad/bored.wav": "dropped_label",
    "zbad/duplicate.wav": "duplicate",
    "zbad/missing.wav": "missing",
}


def make_corpus(root, speakers=6, per_label=2):
    """Good files under wav/, planted bad ones under zbad/ (sorted after: the first copy
    of duplicate content is the one kept)."""
    rows = []
    for s in range(speakers):
        for label, freq in LABELS.items():
            for k in range(per_label):
                rel = f"wav/spk{s}/{label}_{k}.wav"
                write_audio(root / rel, tone(1.0 + 0.1 * k, freq=freq * (1 + 0.05 * s), seed=s * 100 + k))
                rows.append((rel, label, f"spk{s}"))
    # formats and channel layouts users bring
    write_audio(root / "wav/spk0/stereo_44k.wav", tone(1.2, rate=44100, freq=300, channels=2), rate=44100)
    write_audio(root / "wav/spk1/clip.flac", tone(1.0, freq=250, seed=7), format="FLAC")
    write_audio(root / "wav/spk2/clip.ogg", tone(1.0, freq=250, seed=8), format="OGG", subtype="VORBIS")
    write_audio(root / "wav/spk3/excited.wav", tone(1.0, freq=280, seed=9))
    rows += [
        ("wav/spk0/stereo_44k.wav", "angry", "spk0"),
        ("wav/spk1/clip.flac", "happy", "spk1"),
        ("wav/spk2/clip.ogg", "sad", "spk2"),
        ("wav/spk3/excited.wav", "excited", "spk3"),
    ]
    # planted bad files
    (root / "zbad").mkdir()
    (root / "zbad/corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 10)
    (root / "zbad/empty.wav").write_bytes(b"")
    write_audio(root / "zbad/silent.wav", np.zeros(16000, dtype="float32"))
    nan = tone(1.0)
    nan[100:200] = np.nan
    write_audio(root / "zbad/nan.wav", nan, subtype="FLOAT")
    write_audio(root / "zbad/short.wav", tone(0.1))
    write_audio(root / "zbad/long.wav", tone(6.0))
    (root / "zbad/rate_1hz.wav").write_bytes(hostile.wav_at(1))
    (root / "zbad/lying.flac").write_bytes(hostile.lying_flac())
    write_audio(root / "zbad/bored.wav", tone(1.0, seed=11))
    shutil.copy(root / "wav/spk0/angry_0.wav", root / "zbad/duplicate.wav")
    rows += [(rel, "angry", "spk4") for rel in BAD if rel != "zbad/bored.wav"]
    rows.append(("zbad/bored.wav", "bored", "spk4"))
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "speaker"])
        writer.writerows(rows)
    return len(rows)


def config(source, dest, **kw):
    base = dict(source=str(source), dest=str(dest), labels=MAPPING, folds=3, max_seconds=5.0, workers=2)
    return IngestConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    n = make_corpus(root)
    return root, n


def test_ingest_keeps_good_files_and_lists_every_reject(corpus, tmp_path):
    root, files = corpus
    report = ingest(config(root, tmp_path / "ds"), progress=False)
    info = report.info
    reasons = {r.source.split(str(root) + "/")[-1]: r.reason for r in report.rejects}
    assert reasons == BAD
    assert info.num_rows + info.rejected == info.files_seen == files
    assert info.labels == ["angry", "happy", "sad"]
    assert info.format == "csv" and info.fold_source == "speakers" and info.num_folds == 3

    rejects = list(csv.DictReader(open(tmp_path / "ds" / "rejects.csv")))
    assert len(rejects) == len(BAD) and all(r["message"] for r in rejects)
    assert not any("0x" in r["message"] for r in rejects), "messages name no memory addresses"
    assert f"{info.num_rows} rows + {len(BAD)} rejected = {files} files seen" in report.summary()

    table = pq.read_table(tmp_path / "ds" / info.shards[0].name)
    assert table.schema.equals(ARROW_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    ids = [r["utterance_id"] for r in rows]
    assert len(set(ids)) == len(ids) and ids != sorted(ids), "rows in a seeded random order, not the corpus' own"
    assert ids == sorted(ids, key=lambda i: row_order_key(i, 0))
    excited = next(r for r in rows if r["source"].endswith("excited.wav"))
    assert excited["label"] == "happy", "the mapping merges excited into happy"
    stereo = next(r for r in rows if r["source"].endswith("stereo_44k.wav"))
    wave = decode_flac(stereo["audio"])
    assert stereo["sample_rate"] == 16000 and abs(wave.size - 19200) <= 2, "44.1 kHz stereo -> 16 kHz mono"
    original = sf.read(root / "wav/spk1/angry_1.wav", dtype="float32")[0]
    stored = next(r for r in rows if r["source"].endswith("spk1/angry_1.wav"))
    np.testing.assert_allclose(decode_flac(stored["audio"]), original, atol=2 / 32768)
    for r in rows:
        assert r["label_id"] == info.labels.index(r["label"])


def test_folds_are_speaker_independent_and_balanced(corpus, tmp_path):
    root, _ = corpus
    info = ingest(config(root, tmp_path / "ds"), progress=False).info
    rows = pq.read_table(tmp_path / "ds" / info.shards[0].name, columns=["speaker", "fold"]).to_pylist()
    folds_of = {}
    for r in rows:
        folds_of.setdefault(r["speaker"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds_of.values())
    assert {next(iter(f)) for f in folds_of.values()} == {0, 1, 2}
    sizes = [sum(c.values()) for c in info.counts_by_fold.values()]
    assert max(sizes) - min(sizes) <= 8
    assert sum(sum(c.values()) for c in info.counts_by_speaker.values()) == info.num_rows


def test_rerun_is_byte_identical_and_replaces_stale_shards(corpus, tmp_path):
    root, _ = corpus
    first = ingest(config(root, tmp_path / "a", shard_mb=0.05), progress=False).info
    second = ingest(config(root, tmp_path / "b", shard_mb=0.05), progress=False).info
    assert len(first.shards) > 1
    assert [s.name for s in first.shards] == [s.name for s in second.shards]
    for s in first.shards:
        assert (tmp_path / "a" / s.name).read_bytes() == (tmp_path / "b" / s.name).read_bytes()
    assert (tmp_path / "a" / "rejects.csv").read_bytes() == (tmp_path / "b" / "rejects.csv").read_bytes()
    again = ingest(config(root, tmp_path / "a", shard_mb=128), progress=False).info
    assert len(again.shards) == 1
    on_disk = sorted(p.name for p in (tmp_path / "a").glob("part-*.parquet"))
    assert on_disk == [again.shards[0].name], "shards of the earlier dataset are removed"
    assert not list((tmp_path / "a").glob(".tmp-*"))


def test_dataset_json_describes_the_dataset(corpus, tmp_path):
    root, _ = corpus
    ingest(config(root, tmp_path / "ds"), progress=False)
    raw = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    for key in ["schema_version", "labels", "counts_by_fold", "counts_by_speaker", "total_seconds", "source", "created_at", "rejected"]:
        assert key in raw
    info = read_info(str(tmp_path / "ds"))
    arrays = load_arrays(str(tmp_path / "ds"), folds=[0])
    assert len(arrays["waveform"]) == sum(info.counts_by_fold["0"].values())


def test_without_mapping_every_label_is_kept(corpus, tmp_path):
    root, _ = corpus
    info = ingest(config(root, tmp_path / "ds", labels=None), progress=False).info
    assert info.labels == ["angry", "bored", "excited", "happy", "sad"]


def test_label_mapping_parsing(tmp_path):
    assert parse_label_mapping("iemocap4")["excited"] == "happy"
    assert parse_label_mapping("a=x, b=x, c=-") == {"a": "x", "b": "x", "c": None}
    (tmp_path / "m.yaml").write_text("Hap: happy\nexc: happy\nfru: null\n")
    assert parse_label_mapping(str(tmp_path / "m.yaml")) == {"hap": "happy", "exc": "happy", "fru": None}
    with pytest.raises(ValueError, match="from=to"):
        parse_label_mapping("nonsense")


def test_bad_sources_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ingest(config(tmp_path / "nope", tmp_path / "ds"), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="could not recognise"):
        ingest(config(tmp_path / "empty", tmp_path / "ds"), progress=False)
    with pytest.raises(ValueError, match="unknown format"):
        config(tmp_path, tmp_path / "ds", format="timit")
    with pytest.raises(FileNotFoundError, match="no dataset at"):
        read_info(str(tmp_path / "ds"))


def test_s3_source_and_destination(corpus, s3):
    import s3fs

    from emodistill.storage import S3Options

    root, files = corpus
    fs = s3fs.S3FileSystem(**S3Options().storage_options())
    fs.put(str(root) + "/", f"{s3}/corpus/", recursive=True)
    fs.rm(f"{s3}/corpus/wav/spk5/sad_1.wav")  # a manifest entry whose object is missing
    report = ingest(config(f"{s3}/corpus", f"{s3}/ds"), progress=False)
    info = report.info
    reasons = {r.source.rsplit("/corpus/", 1)[-1]: r.reason for r in report.rejects}
    assert reasons == {**BAD, "wav/spk5/sad_1.wav": "missing"}
    assert info.num_rows + info.rejected == files
    assert fs.exists(f"{s3}/ds/dataset.json") and fs.exists(f"{s3}/ds/rejects.csv")
    assert read_info(f"{s3}/ds").num_rows == info.num_rows
    arrays = load_arrays(f"{s3}/ds", folds=[1])
    assert len(arrays["label_id"]) == sum(info.counts_by_fold["1"].values())
    with pytest.raises(FileNotFoundError, match="no dataset at"):
        read_info(f"{s3}/nothing-here")
