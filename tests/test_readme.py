"""The README cannot drift: every command block in it is run here.

The ``make demo`` / ``make test`` block is checked with ``make -n`` (CI runs ``make test``
itself; tests/cli/test_demo_output.py runs the demo). Every ```bash and ```python block
runs, in order, in a scratch folder that holds what the README assumes: the repository's
``jobs/`` and ``serve_configs/``, and ``models/wav2vec2-base``, a local copy of a Hugging
Face encoder (here a random-init 12-block wav2vec2 of tiny width: no download). Two
changes keep it affordable, and only these: ``emodistill train`` (not ``--dry-run``) gets
``optim.epochs=2`` appended, and the serving blocks run on a free port instead of 8000,
serving the walkthrough's checkpoint where the README serves the demo's.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_ports

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def blocks(text: str = README) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"(?ms)^```(\w*)\n(.*?)^```", text)]


def commands(body: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_stays_short_and_leads_with_what_it_is():
    lines = README.splitlines()
    assert len(lines) <= 200, len(lines)
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:3] == ["## What it needs", "## Start", "## Your own corpus and backbone"], headings
    assert README.index("Speech emotion recognition") < README.index("make demo")


def test_the_start_commands_are_make_targets():
    plain = [body for lang, body in blocks() if lang == ""]
    assert commands(plain[0]) == ["make demo", "make test"]
    result = subprocess.run(["make", "-n", "demo", "test"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_linked_page_exists():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def _tiny_wav2vec2(path: Path) -> None:
    from transformers import AutoModel

    from emodistill.model import arch_config

    AutoModel.from_config(arch_config("tiny", num_hidden_layers=12)).save_pretrained(path)


def _adapt(command: str, port: int) -> str:
    if command.startswith("emodistill train") and "--dry-run" not in command:
        command += " optim.epochs=2"
    return command.replace("8000", str(port))


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve run exited"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"{url} never became healthy")


@pytest.mark.slow
def test_every_block_of_the_readme_runs(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("jobs", "serve_configs", "schemas"):
        (work / name).symlink_to(ROOT / name)
    _tiny_wav2vec2(work / "models" / "wav2vec2-base")
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env["MLFLOW_ALLOW_FILE_STORE"] = "true"

    def run(command: str) -> None:
        result = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"$ {command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    served: subprocess.Popen | None = None
    try:
        for lang, body in blocks():
            if lang == "bash":
                for command in commands(body):
                    if command.startswith("serve run"):
                        # the README serves the demo's checkpoint: here the walkthrough's stands in for it
                        demo = work / "runs" / "demo"
                        demo.mkdir(parents=True, exist_ok=True)
                        for src, dst in (("runs/my_corpus/checkpoint", "checkpoint"), ("runs/my_corpus/report", "report"), ("my_corpus", "corpus")):
                            (demo / dst).symlink_to(work / src)
                        config = (ROOT / "serve_configs" / "local.yaml").read_text().replace("port: 8000", f"port: {port}")
                        (work / "local.yaml").write_text(config)
                        argv = shlex.split(command.replace("serve_configs/local.yaml", "local.yaml"))
                        served = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                        _wait_healthy(f"http://127.0.0.1:{port}", served)
                    else:
                        run(_adapt(command, port))
            elif lang == "python":
                script = work / "block.py"
                script.write_text(_adapt(body, port))
                run(f"{shlex.quote(sys.executable)} block.py")
    finally:
        if served is not None and served.poll() is None:
            os.killpg(served.pid, signal.SIGINT)
            try:
                served.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(served.pid, signal.SIGKILL)
    assert (work / "runs/my_corpus/report/exit_profile.json").exists()
    assert (work / "exports/exit_6/model.onnx").exists()
    assert (work / "timeline.png").exists()
