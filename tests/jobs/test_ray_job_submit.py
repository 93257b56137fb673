"""docs/cluster.md as written: its ```bash blocks run in order against a fresh
`ray start --head` (token auth on, as Ray 2.60 makes it), and every job they submit
succeeds and leaves its outputs on the shared folder.

The only changes to the documented text: the example folder /mnt/shared/emodistill is a
temporary folder, the head gets free ports (and --block, a temp dir of its own and 2 CPUs,
so that it stops with this test and nothing else). The cluster runs with its own HOME, so
it neither touches the user's ~/.ray/auth_token nor becomes the cluster that a later
`ray.init()` in this test session would find and join; and its processes get RAY_ADDRESS =
its own GCS, because this machine runs other clusters too (the test session's own), which
Ray's auto-detection (e.g. Ray Train's placement-group cleaner in a Tune trial) would find
as well and refuse to choose between.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_ports

from emodistill.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cluster.md"
EXAMPLE_SHARED = "/mnt/shared/emodistill"
RAY = str(Path(sys.executable).with_name("ray"))


def bash_blocks(markdown: str) -> list[str]:
    """The ```bash fenced blocks of a markdown text, in order."""
    return re.findall(r"^```bash\n(.*?)^```", markdown, re.M | re.S)


def _logical_lines(block: str) -> list[str]:
    """A block's lines with backslash continuations joined."""
    return block.replace("\\\n", " ").splitlines()


def _env_after(script: str, env: dict) -> dict:
    """The environment after running ``script`` in bash (its exports)."""
    out = subprocess.run(["bash", "-c", f"set -euo pipefail\n{script}\nenv -0"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(item.split("=", 1) for item in out.stdout.split("\0") if "=" in item)


def test_the_documented_blocks_are_what_this_test_runs():
    blocks = bash_blocks(DOC.read_text())
    assert len(blocks) == 2, "a set-up block and a jobs block"
    setup, jobs = blocks
    assert [line for line in _logical_lines(setup) if line.startswith("ray start --head")], "the head starts in block 1"
    submits = [line for line in _logical_lines(jobs) if line.startswith("ray job submit")]
    assert [shlex.split(s)[shlex.split(s).index("--") + 2] for s in submits] == [
        "jobs/ingest.py", "jobs/train.py", "jobs/evaluate.py", "jobs/tune.py"
    ]
    for line in submits:  # nothing relative: it would name the uploaded copy, not the data
        args = shlex.split(line, comments=True)
        paths = [a.split("=", 1)[-1] for a in args[args.index("--") + 3:] if "/" in a and not a.startswith("--config")]
        assert all(p.startswith(("$SHARED", "[", "s3://")) for p in paths if not p.startswith("jobs/")), line
    assert "runs/" not in setup + jobs, "runs/ is git-ignored: never uploaded with --working-dir"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # four jobs + synth on a 2-CPU cluster: a few minutes on an idle 2-core machine
def test_docs_cluster_md_runs_as_written(tmp_path):
    setup, jobs = bash_blocks(DOC.read_text())
    gcs, dashboard, agent, client = free_ports(4)
    shared = tmp_path / "shared"
    home = tmp_path / "home"
    home.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's unix sockets live here

    def adapt(text: str) -> str:
        return text.replace(EXAMPLE_SHARED, str(shared)).replace(":8265", f":{dashboard}")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_", "EMODISTILL_"))}
    env["HOME"] = str(home)
    lines = _logical_lines(adapt(setup))
    (start,) = [i for i, line in enumerate(lines) if line.startswith("ray start --head")]
    env = _env_after("\n".join(lines[:start]), env)
    assert (home / ".ray" / "auth_token").is_file(), "the documented token set-up wrote no token"
    head_argv = shlex.split(lines[start], comments=True) + [
        "--block", f"--port={gcs}", "--num-cpus=2", f"--temp-dir={temp_dir}", f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
    ]
    log = open(tmp_path / "ray-start.log", "w")  # a file, not a pipe nobody drains
    head_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"}
    head = subprocess.Popen(head_argv, env=head_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            assert head.poll() is None, "ray start --head exited:\n" + (tmp_path / "ray-start.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # answering, if only to refuse us: up
                break
            except OSError:
                assert time.time() < deadline, "the dashboard (job API) did not come up"
                time.sleep(1)
        env = _env_after("\n".join(lines[start + 1:]), env)
        assert env["RAY_ADDRESS"] == f"http://127.0.0.1:{dashboard}" and env["RAY_AUTH_MODE"] == "token"

        # auth is on: a client with the wrong token is refused
        wrong = subprocess.run([RAY, "job", "list"], env={**env, "RAY_AUTH_TOKEN": "x" * 32}, cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
        assert wrong.returncode != 0 and "auth" in (wrong.stdout + wrong.stderr).lower()

        run = subprocess.run(["bash", "-c", f"set -euo pipefail\n{adapt(jobs)}"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=1500)
        logs = run.stdout + run.stderr
        assert run.returncode == 0, logs[-6000:]
        assert logs.count("succeeded") >= 4, logs[-4000:]
        assert "epoch 1/1: loss" in logs, "the driver's per-epoch lines reach the job log"
        assert "(pid=" not in logs and "Dataset " not in logs, "Ray's own lines go to the run's log file"
        assert (shared / "ray" / "logs" / "demo.log").is_file()

        ckpt = load_checkpoint(str(shared / "checkpoint"))
        assert ckpt.model.exit_names == ["exit_1", "exit_3", "exit_5", "exit_7"]  # jobs/configs/demo_cpu.yaml
        assert (shared / "report" / "exit_profile.json").is_file(), "evaluate wrote the serving profile"
        assert (shared / "tune-out" / "results.md").is_file() and (shared / "tune-out" / "best").is_dir()
        listed = subprocess.run([RAY, "job", "list"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and listed.stdout.count("SUCCEEDED") >= 4, listed.stdout[-2000:]
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ray start stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()


def test_bootstrap_ships_the_package_when_it_is_not_installed():
    """From a bare checkout, jobs/_bootstrap.py loads platform/emodistill by file location
    (platform/ never goes on sys.path) and returns it as the job's py_modules entry."""
    code = f"""
import importlib.abc, sys
class HideInstalled(importlib.abc.MetaPathFinder):  # as if emodistill were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "emodistill" and not getattr(self, "off", False):
            raise ImportError("hidden")
hide = HideInstalled()
sys.meta_path.insert(0, hide)
sys.path.insert(0, {str(ROOT / "jobs")!r})
before = list(sys.path)
from _bootstrap import PACKAGE_DIR, ensure_emodistill
py_modules = ensure_emodistill()
hide.off = True
import emodistill, emodistill.train.config, platform
print(py_modules == [str(PACKAGE_DIR)], emodistill.__file__.startswith(str(PACKAGE_DIR)),
      hasattr(platform, "python_version"), sys.path != before)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "jobs", capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True", "False"], out.stdout + out.stderr
