"""Scrape what a real Ray cluster exports for the serving application's metrics.

    python tests/k8s/metrics_probe.py OUT.json

Starts a local Ray cluster (its own session; metrics endpoint on a free port), runs a
Ray Serve application whose replica builds every metrics class of the serving code (each
class of emodistill.serve.app named *Metrics, e.g. ServeMetrics) and records one sample on
every metric they define (whatever they are: counters, gauges, histograms, with
every tag set), answers one request with 200 and one with 503 (so that Ray Serve's own
request and error metrics exist too), then reads Ray's Prometheus endpoint until every
metric has arrived. Writes {"metrics": [{attribute, name, type, tags}], "scrape": text}.

A script rather than test code: Ray is initialised once per process, and the test session
may already have a cluster of its own.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest.free_ports

# The Ray Serve metrics the dashboard reads besides the application's own.
SERVE_METRICS = (
    "ray_serve_deployment_queued_queries",
    "ray_serve_replica_processing_queries",
    "ray_serve_deployment_processing_latency_ms_bucket",
    "ray_serve_num_http_error_requests_total",
    "ray_serve_deployment_replica_healthy",
    "ray_serve_autoscaling_target_replicas",
)
SUFFIX = {"Counter": ["_total"], "Gauge": [""], "Histogram": ["_bucket", "_sum", "_count"]}


def metrics_classes() -> list[type]:
    """The classes of emodistill.serve.app whose name ends in Metrics (defined there)."""
    import inspect

    import emodistill.serve.app as app

    return [
        cls for name, cls in vars(app).items()
        if inspect.isclass(cls) and name.endswith("Metrics") and cls.__module__ == app.__name__
    ]


def describe(metrics_object) -> list[dict]:
    """Every Ray metric an object holds as an attribute: attribute, name, type, tag keys."""
    from ray.util.metrics import Metric

    return [
        {"attribute": f"{type(metrics_object).__name__}.{attr}", "name": value.info["name"], "tags": list(value.info["tag_keys"]),
         "type": next(c.__name__ for c in type(value).__mro__ if c.__module__ == "ray.util.metrics" and c.__name__ in SUFFIX)}
        for attr, value in vars(metrics_object).items()
        if isinstance(value, Metric)
    ]


def record_everything(metrics_object) -> None:
    """One sample on every metric of ``metrics_object``, every tag key given a value."""
    from ray.util.metrics import Counter, Gauge, Histogram

    for value in vars(metrics_object).values():
        tags = {key: f"probe_{key}" for key in value.info["tag_keys"]} if hasattr(value, "info") else {}
        if isinstance(value, Histogram):
            value.observe(12.0, tags=tags)
        elif isinstance(value, Counter):
            value.inc(tags=tags)
        elif isinstance(value, Gauge):
            value.set(1.0, tags=tags)


def exposed(scrape: str) -> set[str]:
    """The sample names of a Prometheus text exposition."""
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in scrape.splitlines() if line and not line.startswith("#")}


def main(out: str) -> int:
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    from conftest import free_ports

    metrics_port, http_port = free_ports(2)
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
        _metrics_export_port=metrics_port, _system_config={"metrics_report_interval_ms": 1000},
    )

    @serve.deployment(name="exit_1")
    class Exit:
        def __call__(self, x: int) -> int:
            return x

    @serve.deployment(name="RouterDeployment")
    class Probe:
        def __init__(self, exit_handle):
            self.metrics = [cls() for cls in metrics_classes()]
            for metrics in self.metrics:
                record_everything(metrics)
            self.exit = exit_handle

        async def __call__(self, request: Request):
            await self.exit.remote(1)
            status = 503 if request.url.path.endswith("/refuse") else 200
            return PlainTextResponse("probe", status_code=status)

        def describe(self) -> list[dict]:
            return [m for metrics in self.metrics for m in describe(metrics)]

    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    handle = serve.run(Probe.bind(Exit.bind()), name="emodistill", route_prefix="/")
    defined = handle.describe.remote().result()
    for path in ("/", "/refuse"):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=30).read()
        except urllib.error.HTTPError as err:
            assert err.code == 503, err
    wanted = {f"ray_{m['name']}{s}" for m in defined for s in SUFFIX[m["type"]]} | set(SERVE_METRICS)
    deadline, scrape = time.time() + 120, ""
    while time.time() < deadline:
        try:
            scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        except OSError:
            scrape = ""
        if wanted <= exposed(scrape):
            break
        time.sleep(1)
    Path(out).write_text(json.dumps({"metrics": defined, "scrape": scrape}))
    serve.shutdown()
    ray.shutdown()
    missing = wanted - exposed(scrape)
    if missing:
        print(f"not exported within 120 s: {sorted(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
