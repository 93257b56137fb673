"""The Grafana dashboard of the serving application, as code: `python k8s/render.py` writes
k8s/components/monitoring/emodistill-dashboard.json from it.

Metric names are the ones Prometheus sees. Ray exports a custom metric NAME of the
serving code (emodistill.serve.app.ServeMetrics) as `ray_NAME`, a counter as
`ray_NAME_total`, a histogram as `ray_NAME_bucket` / `_sum` / `_count`, each series with
the labels the code gives it plus `application`, `deployment` and `replica` (Ray Serve
adds them) and Ray's own (`SessionName`, `NodeAddress`, ...). Ray Serve's built-in metrics
are `ray_serve_*`. tests/k8s/test_dashboard.py scrapes a real Ray cluster that records
every ServeMetrics metric and checks each query's metric names against that scrape.
"""

from __future__ import annotations

import json

APP = 'application=~"$application"'
RATE = "$__rate_interval"

# what Prometheus sees (see the module docstring)
REQUESTS = "ray_emodistill_requests_total"
SLA_MISSES = "ray_emodistill_sla_misses_total"
DEGRADED = "ray_emodistill_degraded_total"
ERRORS = "ray_emodistill_errors_total"
LATENCY = "ray_emodistill_latency_ms_bucket"
SERVE_HTTP_ERRORS = "ray_serve_num_http_error_requests_total"
SERVE_PROCESSING = "ray_serve_deployment_processing_latency_ms_bucket"
SERVE_QUEUED = "ray_serve_deployment_queued_queries"
SERVE_PROCESSING_NOW = "ray_serve_replica_processing_queries"
SERVE_HEALTHY = "ray_serve_deployment_replica_healthy"
SERVE_TARGET = "ray_serve_autoscaling_target_replicas"


def rate(metric: str, by: str, extra: str = "") -> str:
    selector = f"{metric}{{{APP}{', ' + extra if extra else ''}}}"
    return f"sum by ({by}) (rate({selector}[{RATE}]))"


def quantile(q: float, metric: str, by: str, extra: str = "") -> str:
    return f"histogram_quantile({q}, {rate(metric, f'{by}, le', extra)})"


def share(part: str, whole: str, by: str) -> str:
    """part/whole per group, 0 (not missing) where part has no series yet."""
    return f"({rate(part, by)} or {rate(whole, by)} * 0) / {rate(whole, by)}"


def _panel(pid, title, description, targets, x, y, w=12, h=8, unit="short", kind="timeseries", stack=False):
    panel = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if kind == "timeseries":
        panel["fieldConfig"]["defaults"]["custom"] = {"stacking": {"mode": "normal" if stack else "none"}}
        panel["options"] = {"legend": {"displayMode": "table", "placement": "right"}, "tooltip": {"mode": "multi"}}
    return panel


def _row(pid, title, y):
    return {"id": pid, "type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}


def panels() -> list[dict]:
    attainment = f"1 - {share(SLA_MISSES, REQUESTS, 'tier')}"
    return [
        _row(1, "SLA", 0),
        _panel(2, "SLA attainment per tier",
               "Share of answered requests within their tier's budget (the router's clock).",
               [(attainment, "{{tier}}")], 0, 1, unit="percentunit"),
        _panel(3, "Requests per second by tier and answering exit", "Answered requests.",
               [(rate(REQUESTS, "tier, exit"), "{{tier}} / {{exit}}")], 12, 1, unit="reqps", stack=True),
        _row(4, "Latency", 9),
        _panel(5, "Latency per exit (p50, p95, p99)",
               "Router latency of the answers each exit gave, from its histogram.",
               [(quantile(q, LATENCY, "exit"), f"{{{{exit}}}} p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
               0, 10, unit="ms"),
        _panel(6, "Latency per tier (p95)", "Router latency per latency tier.",
               [(quantile(0.95, LATENCY, "tier"), "{{tier}} p95")], 12, 10, unit="ms"),
        _panel(7, "Exit model time per deployment (p95)",
               "Time inside each exit deployment's replicas (Ray Serve's processing latency).",
               [(quantile(0.95, SERVE_PROCESSING, "deployment", 'deployment=~"exit_.*"'), "{{deployment}} p95")],
               0, 18, unit="ms"),
        _row(8, "Degradations and refusals", 26),
        _panel(9, "Degraded answers per tier",
               "Share of answers from a shallower exit than the tier asked for (to meet its budget).",
               [(share(DEGRADED, REQUESTS, "tier"), "{{tier}}")], 0, 27, unit="percentunit"),
        _panel(10, "Degradations by answering exit", "Degraded answers per second.",
               [(rate(DEGRADED, "tier, exit"), "{{tier}} -> {{exit}}")], 12, 27, unit="reqps", stack=True),
        _panel(11, "Refusals by error code",
               "Requests the application refused (JSON error bodies), per error code.",
               [(rate(ERRORS, "code"), "{{code}}")], 0, 35, unit="reqps", stack=True),
        _panel(12, "HTTP errors at the Serve proxy by status",
               "Every error answer, including the 503s of Serve's own back-pressure "
               "(max_queued_requests of the router) that never reach the application.",
               [(rate(SERVE_HTTP_ERRORS, "error_code"), "{{error_code}}")], 12, 35, unit="reqps", stack=True),
        _row(13, "Queues and replicas", 43),
        _panel(14, "Queue depth per deployment",
               "Requests waiting for a replica (in the handles of the proxy and of the router).",
               [(f"sum by (deployment) ({SERVE_QUEUED}{{{APP}}})", "{{deployment}}")], 0, 44),
        _panel(15, "Requests in flight per deployment", "Requests being processed by the replicas.",
               [(f"sum by (deployment) ({SERVE_PROCESSING_NOW}{{{APP}}})", "{{deployment}}")], 12, 44),
        _panel(16, "Replicas per deployment (healthy, autoscaling target)", "",
               [(f"sum by (deployment) ({SERVE_HEALTHY}{{{APP}}})", "{{deployment}} healthy"),
                (f"max by (deployment) ({SERVE_TARGET}{{{APP}}})", "{{deployment}} target")], 0, 52),
    ]


def dashboard() -> dict:
    return {
        "uid": "emodistill-serve",
        "title": "emodistill serving",
        "description": "SLA attainment, latency per exit, degradations, refusals and queues of the "
        "emodistill Serve application (generated by k8s/render.py from k8s/dashboard.py).",
        "tags": ["emodistill", "ray-serve"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                 "current": {}, "hide": 0},
                {"name": "application", "label": "Serve application", "type": "query",
                 "datasource": {"type": "prometheus", "uid": "${datasource}"},
                 "query": {"query": f"label_values({SERVE_HEALTHY}, application)", "refId": "application"},
                 "definition": f"label_values({SERVE_HEALTHY}, application)",
                 "current": {"text": "emodistill", "value": "emodistill"}, "includeAll": True, "multi": True,
                 "refresh": 2, "hide": 0},
            ]
        },
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"
