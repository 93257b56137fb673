"""The jobs/ entrypoints on a real cluster: `ray start --head` (token auth on, as Ray 2.60
makes it), `ray job submit` of the demo training job, its checkpoint, `ray stop`.

The cluster runs in its own temp dir and HOME, so it neither touches the user's
~/.ray/auth_token nor becomes the cluster that a later `ray.init()` in this test session
would find and join; stopping it only stops its own processes.
"""

from __future__ import annotations

import os
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
RAY = str(Path(sys.executable).with_name("ray"))
pytestmark = pytest.mark.slow


@pytest.fixture
def head(tmp_path):
    """A one-node cluster from `ray start --head --block` with token auth; yields (job API address, env)."""
    home = tmp_path / "home"
    home.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's unix sockets live here
    gcs, dashboard, agent, client = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(home)
    # the cluster's `python` (what a job's entrypoint runs) is this environment's, as on a
    # node whose image has the project installed
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # the documented set-up: a token in ~/.ray/auth_token, and token auth on for the head
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, check=True, timeout=60)
    log = open(tmp_path / "ray-start.log", "w")  # a file, not a pipe nobody drains
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2", f"--temp-dir={temp_dir}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}"],
        env={**env, "RAY_AUTH_MODE": "token"}, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, "ray start --head exited:\n" + (tmp_path / "ray-start.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # answering, if only to refuse us: up
                break
            except OSError:
                assert time.time() < deadline, "the dashboard (job API) did not come up"
                time.sleep(1)
        yield address, env
    finally:
        proc.send_signal(signal.SIGTERM)  # --block: ray start stops what it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _ray(args: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_demo_training_job_runs_through_ray_job_submit(head, tiny_dataset, tmp_path):
    address, env = head
    token = Path(env["HOME"]) / ".ray" / "auth_token"
    assert token.is_file() and len(token.read_text().strip()) >= 32

    # auth is on: a client with the wrong token is refused ...
    wrong = _ray(["job", "list", "--address", address], {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "x" * 32})
    assert wrong.returncode != 0
    assert "auth" in (wrong.stdout + wrong.stderr).lower()

    # ... and with the cluster's token (~/.ray/auth_token) the demo training job runs
    client = {**env, "RAY_AUTH_MODE": "token"}
    export = tmp_path / "checkpoint"
    submit = _ray(
        ["job", "submit", "--address", address, "--working-dir", ".", "--",
         "python", "jobs/train.py", "--config", "jobs/configs/demo_cpu.yaml",
         f"data.dataset={tiny_dataset}", f"run.storage_path={tmp_path / 'ray'}", f"run.export_dir={export}",
         "run.name=job", "optim.epochs=2", "optim.batch_size=6"],
        client, timeout=480,
    )
    logs = submit.stdout + submit.stderr
    assert submit.returncode == 0, logs[-4000:]
    assert "succeeded" in logs, logs[-4000:]
    assert "epoch 2/2" in logs, "the driver's per-epoch lines reach the job log"

    ckpt = load_checkpoint(export)
    assert ckpt.model.exit_names == ["exit_1", "exit_2", "exit_3", "exit_4"]
    assert ckpt.config.metadata["epoch"] in (0, 1) and len(ckpt.config.metadata["history"]) >= 1
    listed = _ray(["job", "list", "--address", address], client)
    assert listed.returncode == 0 and "SUCCEEDED" in listed.stdout, listed.stdout[-2000:]


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
