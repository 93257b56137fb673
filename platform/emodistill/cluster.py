"""Connecting to Ray: one place for how every command starts or joins a cluster."""

from __future__ import annotations

import os
from pathlib import Path


def init_ray(
    address: str | None = None, py_modules: list[str] | None = None, quiet: bool = False,
    log_file: str | Path | None = None,
) -> None:
    """Join ``address`` / RAY_ADDRESS, or start a local cluster; no-op when connected.

    ``log_file``: everything Ray prints (its workers' and actors' lines, the driver's
    ``ray.*`` loggers, deprecation warnings) goes to that file instead of the terminal
    (:mod:`emodistill.console`; ``--verbose`` shows it too). ``quiet`` drops the workers'
    lines (benchmarks). Ray Data progress bars are off everywhere; the driver draws our
    own per-epoch progress. ``py_modules`` ships local packages to every worker (merged
    into a Ray job's runtime env).
    """
    import ray

    from emodistill import console

    if log_file is not None:
        console.route_ray_output(log_file)
    if ray.is_initialized():  # e.g. jobs/_bootstrap.py connected first: route from now on
        if log_file is not None:
            console.hook_worker_output()
        return
    quiet_env = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    os.environ.update(quiet_env)
    runtime_env: dict = {"env_vars": quiet_env}
    if py_modules:
        runtime_env["py_modules"] = py_modules
    address = address or os.environ.get("RAY_ADDRESS")
    routed = log_file is not None and not console.verbose()
    forward = not quiet and (log_file is None or console.has_worker_hook() or console.verbose())
    ray.init(
        address=address,
        log_to_driver=forward,
        # a LoggingConfig also puts a terminal handler on this process's loggers while
        # ray.init still logs (its token notice): not when the output goes to the file
        logging_config=None if routed else ray.LoggingConfig(log_level="WARNING"),
        runtime_env=runtime_env,
    )
    if log_file is not None:
        console.hook_worker_output()
        console.quiet_python_loggers()
