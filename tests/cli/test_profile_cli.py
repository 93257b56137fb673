"""`emodistill profile` through the real console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).with_name("emodistill")


def run(*args: str) -> subprocess.CompletedProcess:
    exe = [str(BIN)] if BIN.exists() else [shutil.which("emodistill") or "emodistill"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=300)


def test_profile_json_has_every_requested_exit():
    out = run("profile", "--arch", "tiny", "--exits", "1,3", "--seconds", "0.5", "--repeats", "2", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report["exits"]) == {"exit_1", "exit_3"}
    assert report["exits"]["exit_1"]["block"] == 1
    assert report["exits"]["exit_1"]["params"] < report["exits"]["exit_3"]["params"] < report["full"]["params"]
    for row in [*report["exits"].values(), report["full"]]:
        assert 0 < row["latency_ms_p50"] <= row.get("latency_ms_p95", row["latency_ms_p50"])


def test_profile_table_by_default():
    out = run("profile", "--arch", "tiny", "--seconds", "0.5", "--repeats", "2")
    assert out.returncode == 0, out.stderr
    for name in ["exit_1", "exit_2", "exit_3", "exit_4", "full", "conv encoder"]:
        assert name in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--exits", "1,x"], "comma-separated"),
        (["--exits", "7"], "deeper than"),
        (["--backbone", "/nonexistent/dir"], "no backbone directory at /nonexistent/dir"),
    ],
)
def test_profile_bad_arguments(args, message):
    out = run("profile", "--arch", "tiny", *args) if "--backbone" not in args else run("profile", *args)
    assert out.returncode != 0
    assert message in out.stderr + out.stdout
