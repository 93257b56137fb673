"""The source layout: platform/ is a folder, emodistill the only package."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_platform_is_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists(), "platform/__init__.py would shadow Python's platform"
    assert (ROOT / "platform" / "emodistill" / "__init__.py").exists()


def test_stdlib_platform_survives_import_from_repo_root():
    # Run from the repository root, where `platform/` is the first thing on sys.path.
    code = "import emodistill, platform; print(platform.__file__); print(platform.python_version())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    path, version = out.stdout.split()
    assert Path(path).resolve().parent == Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert version == ".".join(map(str, sys.version_info[:3]))


def test_design_card_top_level():
    for name in ["pyproject.toml", "README.md", "platform", "jobs", "serve_configs", "tests", "k8s", "Makefile"]:
        assert (ROOT / name).exists(), name
    readme = (ROOT / "README.md").read_text().splitlines()
    commands = [line.strip() for line in readme[:30] if line.strip().startswith("make ")]
    assert commands[:2] == ["make demo", "make test"]


def test_torch_is_pinned_for_installs():
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().split()
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile
