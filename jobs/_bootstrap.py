"""Make `emodistill` importable in a `ray job submit` driver and on every Ray worker.

With the project installed (the container image), there is nothing to do. From a bare
checkout (`ray job submit --working-dir . -- python jobs/train.py ...`) the package is
loaded from platform/emodistill by file location -- platform/ itself never goes on
sys.path, where it would shadow Python's `platform` module -- and shipped to every
worker as a Ray `py_modules` entry, merged into the job's runtime env by ray.init.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "platform" / "emodistill"


def ensure_emodistill() -> list[str]:
    """Import emodistill; return the py_modules workers need (empty when installed)."""
    try:
        import emodistill  # noqa: F401

        return []
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location(
        "emodistill", PACKAGE_DIR / "__init__.py", submodule_search_locations=[str(PACKAGE_DIR)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"emodistill is not installed and {PACKAGE_DIR} is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules["emodistill"] = module
    spec.loader.exec_module(module)
    return [str(PACKAGE_DIR)]


def init_ray() -> None:
    """Connect to the job's cluster (or start a local one) with emodistill on every worker."""
    py_modules = ensure_emodistill()
    from emodistill.cluster import init_ray as connect

    connect(py_modules=py_modules)


def run_cli(command: str, argv: list[str], needs_ray: bool) -> None:
    """Run `emodistill <command> <argv>` in this process."""
    if needs_ray and "--dry-run" not in argv:
        init_ray()
    else:
        ensure_emodistill()
    from emodistill.cli.main import main

    sys.argv = ["emodistill", command, *argv]
    main()
