"""Connecting to Ray: one place for how every command starts or joins a cluster."""

from __future__ import annotations

import os


def init_ray(address: str | None = None, py_modules: list[str] | None = None, quiet: bool = False) -> None:
    """Join ``address`` / RAY_ADDRESS, or start a local cluster; no-op when connected.

    Ray's own INFO logs and Ray Data progress bars are turned down everywhere so the
    driver shows the per-epoch lines of a run rather than Ray internals. ``py_modules``
    ships local packages to every worker (merged into a Ray job's runtime env).
    """
    import ray

    if ray.is_initialized():
        return
    quiet_env = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    os.environ.update(quiet_env)
    runtime_env: dict = {"env_vars": quiet_env}
    if py_modules:
        runtime_env["py_modules"] = py_modules
    address = address or os.environ.get("RAY_ADDRESS")
    ray.init(
        address=address,
        log_to_driver=not quiet,
        logging_config=ray.LoggingConfig(log_level="WARNING"),
        runtime_env=runtime_env,
    )
