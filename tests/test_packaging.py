"""pyproject's requires-python is what the pinned dependencies need: the newest of their
lower bounds, read from each pinned distribution's own metadata (Requires-Python)."""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
FREEZE_SKIPS = {"pip", "setuptools", "wheel", "distribute"}
MINORS = [Version(f"3.{minor}.99") for minor in range(8, 16)]


def _pins() -> dict[str, str]:
    text = (ROOT / "constraints.txt").read_text()
    return {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)$", text, re.M)}


def _runtime_closure() -> set[str]:
    """The distributions `pip install emodistill[all]` pulls in (extras of dependencies
    followed, emodistill's own extras expanded)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    todo += [Requirement(r) for r in project["optional-dependencies"]["all"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == "emodistill":
            todo += [Requirement(r) for e in req.extras for r in project["optional-dependencies"][e]]
            continue
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # a marker-excluded dependency (other platform or Python)
        for text in dist.requires or []:
            sub = Requirement(text)
            env = {"python_version": f"{sys.version_info.major}.{sys.version_info.minor}"}
            if sub.marker and not any(sub.marker.evaluate({**env, "extra": e}) for e in (req.extras or {""})):
                continue
            todo.append(sub)
    return {k.split("[")[0] for k in seen}


def test_requires_python_is_what_the_pins_need():
    pins = _pins()
    needs = {}
    for name in sorted(_runtime_closure()):
        if name == "emodistill":
            continue
        dist = md.distribution(name)
        assert canonicalize_name(dist.metadata["Name"]) == name
        if name in FREEZE_SKIPS and name not in pins:
            continue  # `pip freeze` (how constraints.txt is made) leaves these out
        assert name in pins, f"{name} is a runtime dependency but constraints.txt does not pin it"
        assert dist.version.split("+")[0] == pins[name].split("+")[0], f"installed {name} {dist.version} != pin {pins[name]}"
        needs[name] = SpecifierSet(dist.metadata.get("Requires-Python") or "")
    supported = [v for v in MINORS if all(v in spec for spec in needs.values())]
    assert supported, "no Python 3 minor satisfies every pin"
    declared = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    allowed = [v for v in MINORS if v in declared]
    lowest = {v.minor: [n for n, s in needs.items() if v not in s] for v in MINORS if v not in supported}
    assert allowed == supported, (
        f"requires-python {declared} admits 3.{[v.minor for v in allowed]}, the pins 3.{[v.minor for v in supported]}; "
        f"excluded by: { {m: names[:5] for m, names in lowest.items()} }"
    )
    assert sys.version_info[:2] >= (supported[0].major, supported[0].minor)
