"""`emodistill predict` and `emodistill export` through the real console script: good and
bad files, JSON lines, CSV, exit status, clear errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tone, write_audio

BIN = Path(sys.executable).with_name("emodistill")


def run(*args: str) -> subprocess.CompletedProcess:
    exe = [str(BIN)] if BIN.exists() else [shutil.which("emodistill") or "emodistill"]
    return subprocess.run([*exe, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Good files at several rates, formats and channel counts, and every kind of bad one."""
    root = tmp_path_factory.mktemp("clips")
    write_audio(root / "good" / "a16k.wav", tone(1.0, freq=180))
    write_audio(root / "good" / "b44k_stereo.flac", tone(1.4, rate=44100, freq=320, channels=2), rate=44100)
    write_audio(root / "good" / "nested" / "c8k.ogg", tone(1.1, rate=8000, freq=250), rate=8000, format="OGG")
    (root / "good" / "notes.txt").write_text("not audio: a directory walk skips it")
    bad = root / "bad"
    bad.mkdir()
    (bad / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (bad / "empty.wav").write_bytes(b"")
    write_audio(bad / "silent.wav", np.zeros(16000, dtype=np.float32))
    write_audio(bad / "overlong.flac", tone(31.0, rate=8000), rate=8000)
    write_audio(bad / "short.wav", tone(0.1))
    return root


def test_json_lines_for_good_and_bad_files_and_a_failing_exit_status(trained_checkpoint, corpus):
    out = run("predict", trained_checkpoint, corpus / "good", corpus / "bad", corpus / "missing.wav", "--json", "--exit", "exit_2")
    assert out.returncode == 1, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    by_name = {Path(line["file"]).name: line for line in lines}
    assert set(by_name) == {"a16k.wav", "b44k_stereo.flac", "c8k.ogg", "corrupt.wav", "empty.wav", "silent.wav",
                            "overlong.flac", "short.wav", "missing.wav"}
    for name in ["a16k.wav", "b44k_stereo.flac", "c8k.ogg"]:
        line = by_name[name]
        assert set(line) >= {"file", "label", "scores", "exit", "latency_ms"} and line["exit"] == "exit_2"
        assert line["label"] == max(line["scores"], key=line["scores"].get) and line["latency_ms"] > 0
    expected = {"corrupt.wav": "unreadable", "empty.wav": "empty", "silent.wav": "silent", "overlong.flac": "too_long",
                "short.wav": "too_short", "missing.wav": "not_found"}
    for name, code in expected.items():
        assert set(by_name[name]) == {"file", "error"} and by_name[name]["error"]["code"] == code, by_name[name]
        assert by_name[name]["error"]["message"]
    assert "3 of 9 files predicted; 6 failed" in out.stderr
    assert "Traceback" not in out.stderr


def test_table_csv_and_glob(trained_checkpoint, corpus):
    out = run("predict", trained_checkpoint, corpus / "good" / "a16k.wav")
    assert out.returncode == 0, out.stderr
    path, label, scores, exit, latency = out.stdout.strip().split("\t")
    assert path.endswith("a16k.wav") and exit == "exit_4" and latency.endswith(" ms") and f"{label}=" in scores
    # a glob (quoted: expanded by predict, ** recursive) tries every file it matches,
    # notes.txt included, unlike a directory walk, which only picks audio files
    out = run("predict", trained_checkpoint, str(corpus / "good" / "**" / "*.*"), "--csv", "--exit", "exit_1")
    assert out.returncode == 1, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    notes = [r for r in rows if r["file"].endswith("notes.txt")]
    assert len(rows) == 4 and notes[0]["error_code"] == "unreadable" and notes[0]["error"]
    good = [r for r in rows if not r["error_code"]]
    assert len(good) == 3 and all(r["exit"] == "exit_1" and float(r["latency_ms"]) > 0 for r in good)
    assert all(r.keys() >= {"score_" + label for label in ["angry", "happy", "sad"]} for r in good)


def test_usage_errors(trained_checkpoint, corpus):
    out = run("predict", trained_checkpoint, corpus / "good", "--exit", "exit_9")
    assert out.returncode == 2 and "no exit 'exit_9'" in out.stderr and "Traceback" not in out.stderr
    out = run("predict", trained_checkpoint, corpus / "good", "--json", "--csv")
    assert out.returncode == 2 and "not both" in out.stderr


def test_export_cli_verifies_and_prints(trained_checkpoint, tmp_path):
    out = run("export", trained_checkpoint, tmp_path / "e", "--exit", "exit_1", "--quantize", "int8", "--repeats", "3")
    assert out.returncode == 0, out.stderr
    for text in ["verification on", "held-out clips", "fp32 logits within 0.0001 of torch", "int8 top-1 agreement",
                 "latency (onnxruntime-int8", "wrote"]:
        assert text in out.stdout, out.stdout
    again = run("export", trained_checkpoint, tmp_path / "e", "--exit", "exit_1")
    assert again.returncode == 2 and "already exists; pass --overwrite" in again.stderr
    missing = run("export", trained_checkpoint, tmp_path / "f", "--exit", "exit_7")
    assert missing.returncode == 2 and "has no exit 'exit_7'" in missing.stderr and "Traceback" not in missing.stderr
    predicted = run("predict", tmp_path / "e", tmp_path / "e" / "README.md", "--json")  # a file that is not audio
    assert predicted.returncode == 1 and json.loads(predicted.stdout)["error"]["code"] == "unreadable"
