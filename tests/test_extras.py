"""Installs that fit the use, checked on the dependency graph (pyproject + the installed
distributions' own metadata), not by installing: `pip install emodistill[serve]` pulls
what inference and serving need and no Tune, plotting, tracking or test tools; the
serving code imports nothing outside that install."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# what an inference-only install must not pull (distribution names)
NOT_FOR_SERVING = {
    "tensorboardx",  # only ray[tune] / ray[train] need it
    "matplotlib",
    "mlflow-skinny",
    "scikit-learn",
    "opensmile",
    "pytest",
    "pytest-timeout",
    "moto",
    "promql-parser",
}


def _own(extras: set[str]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return reqs


def closure(extras: set[str]) -> dict[str, set[str]]:
    """{distribution: extras asked of it} that `pip install emodistill[extras]` pulls,
    extras of dependencies followed (emodistill's own extras included)."""
    env = {"python_version": f"{sys.version_info.major}.{sys.version_info.minor}"}
    todo = _own(extras)
    seen: set[tuple[str, str]] = set()
    out: dict[str, set[str]] = {}
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == "emodistill":
            todo += _own(set(req.extras))
            continue
        for extra in sorted(req.extras) or [""]:
            key = (name, extra)
            if key in seen:
                continue
            seen.add(key)
            out.setdefault(name, set())
            if extra:
                out[name].add(extra)
            try:
                dist = md.distribution(name)
            except md.PackageNotFoundError:
                continue  # excluded by a marker on this platform
            for text in dist.requires or []:
                sub = Requirement(text)
                if sub.marker and not sub.marker.evaluate({**env, "extra": extra}):
                    continue
                todo.append(sub)
    return out


def test_serve_install_pulls_no_tune_plotting_tracking_or_test_tools():
    serve = closure({"serve"})
    assert not NOT_FOR_SERVING & set(serve), sorted(NOT_FOR_SERVING & set(serve))
    assert not serve["ray"] & {"tune", "train", "data"}, f"ray extras pulled: {serve['ray']}"
    for needed in ["ray", "torch", "transformers", "fastapi", "python-multipart", "soundfile", "soxr", "safetensors"]:
        assert needed in serve, needed
    assert "serve" in serve["ray"]


def test_the_extras_add_up_to_the_design_cards_install():
    everything = closure({"all"})
    assert {"serve", "train", "tune"} <= everything["ray"]
    for name in ["torch", "transformers", "s3fs", "pyarrow", "mlflow-skinny", "matplotlib", "httpx", "opensmile"]:
        assert name in everything, name
    assert not {"pytest", "moto"} & set(everything), "test tools only with [dev]"
    dev = closure({"dev"})
    assert {"pytest", "moto", "promql-parser"} <= set(dev) and set(everything) <= set(dev)


def test_every_pinned_extra_is_in_constraints():
    pins = {
        canonicalize_name(line.split("==")[0])
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    missing = sorted(set(closure({"dev"})) - pins - {"pip", "setuptools", "wheel"})
    assert not missing, f"constraints.txt does not pin {missing}"


def test_makefile_installs_the_demo_extra_for_the_demo_and_dev_for_the_tests():
    make = (ROOT / "Makefile").read_text()
    assert '-e ".[all]"' in make and '-e ".[dev]"' in make
    assert "\ndemo: $(DEMO_STAMP)" in make and "\ntest: $(STAMP)" in make


def test_serving_code_imports_only_what_the_serve_extra_installs():
    """Import the serving modules with everything outside the [serve] install absent."""
    blocked = ["matplotlib", "sklearn", "opensmile", "mlflow", "pytest", "moto", "tensorboardX",
               "ray.tune", "ray.train", "ray.air.integrations", "httpx"]
    code = textwrap.dedent(f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None  # `import name` raises ImportError; find_spec says absent
        import emodistill.serve.app, emodistill.serve.local, emodistill.serve.predictor, emodistill.checkpoint
        import emodistill.exit_profile
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
