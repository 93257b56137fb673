"""Run a ``serve_configs/*.yaml`` application from Python, the way ``serve run`` does:
Ray's own config schema, the app builder called with the config's ``args`` through
Serve's builder call, then ``serve.run``. The demo and the benchmarks use it; users run
``serve run serve_configs/local.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from emodistill.config import apply_overrides


def start_from_config(path: str | Path, overrides: list[str] | None = None, port: int | None = None) -> str:
    """Deploy the first application of the Serve config at ``path`` on the connected Ray
    cluster; ``overrides`` are ``key=value`` changes of its ``args``. Returns the base URL."""
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(Path(path).read_text()))
    spec = config.applications[0]
    args: dict[str, Any] = apply_overrides(dict(spec.args), overrides or [])
    http = config.http_options
    host = http.host or "127.0.0.1"
    port = port or http.port
    serve.start(http_options={"host": host, "port": port})
    app = call_user_app_builder_with_args_if_necessary(import_attr(spec.import_path), args)
    serve.run(app, name=spec.name, route_prefix=spec.route_prefix or "/")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
