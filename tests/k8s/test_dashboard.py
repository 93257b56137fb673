"""The Grafana dashboard's queries use the metric names Prometheus actually sees.

A real local Ray cluster runs a Serve app whose replica builds the serving code's metrics
classes (every class of emodistill.serve.app named *Metrics, e.g. ServeMetrics) and
records every metric they define (metrics_probe.py);
Ray's Prometheus endpoint is scraped. Then every PromQL query of the dashboard is parsed
(promql_parser, a real PromQL parser) and each metric it selects must be in that scrape,
each label it groups by must be on that metric's series, and every metric the serving
code defines must be shown by some panel. Metrics the dashboard shows before the serving
code exports them would be listed in PLANNED (none now).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import promql_parser
import pytest

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
DASHBOARD = K8S / "components" / "monitoring" / "emodistill-dashboard.json"
PROBE = Path(__file__).with_name("metrics_probe.py")
SERVE_TAGS = {"deployment", "replica", "application"}  # Ray Serve adds these to every application metric
GRAFANA_MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
# metric -> why a panel shows it although the serving code does not export it yet
PLANNED: dict[str, str] = {}


def _dashboard_module():
    spec = importlib.util.spec_from_file_location("k8s_dashboard", K8S / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target of the checked-in dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def variable_metrics() -> list[str]:
    """Metrics of the template variables' `label_values(metric, label)` queries."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for var in board["templating"]["list"]:
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else ""
        out += re.findall(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,", text)
    return out


def parse(expr: str) -> promql_parser.Expr:
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return promql_parser.parse(expr)


def selections(expr: str) -> list[tuple[str, tuple[str, ...]]]:
    """(metric, labels grouped by above it) for every vector selector of a query."""
    found: list[tuple[str, tuple[str, ...]]] = []

    def visit(node, grouping: tuple[str, ...]) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            if node.modifier is not None and node.modifier.type == promql_parser.AggModifierType.By:
                grouping = tuple(node.modifier.labels)
            visit(node.expr, grouping)
        elif isinstance(node, promql_parser.VectorSelector):
            name = node.name or next(m.value for m in node.matchers.matchers if m.name == "__name__")
            found.append((name, grouping))
        elif isinstance(node, promql_parser.MatrixSelector):
            visit(node.vector_selector, grouping)
        elif isinstance(node, promql_parser.BinaryExpr):
            visit(node.lhs, grouping)
            visit(node.rhs, grouping)
        elif isinstance(node, promql_parser.Call):
            for arg in node.args:
                visit(arg, grouping)
        elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
            visit(node.expr, grouping)

    visit(parse(expr), ())
    return found


def series_labels(scrape: str) -> dict[str, set[str]]:
    """Sample name -> every label name its series carry, from a Prometheus text exposition."""
    out: dict[str, set[str]] = {}
    for line in scrape.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', rest.rpartition("}")[0])) if rest else set()
        out.setdefault(name.split(" ")[0], set()).update(labels)
    return out


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("probe") / "probe.json"
    run = subprocess.run([sys.executable, str(PROBE), str(out)], capture_output=True, text=True, timeout=400)
    assert run.returncode == 0 and out.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())
    data["series"] = series_labels(data["scrape"])
    return data


# ---------------------------------------------------------------- without Ray


def test_the_dashboard_file_is_generated_from_dashboard_py():
    assert DASHBOARD.read_text() == _dashboard_module().render(), "run `python k8s/render.py`"


def test_every_query_parses_and_the_panels_cover_the_issue():
    titles = [title for title, _ in queries()]
    for title, expr in queries():
        assert selections(expr), f"{title}: no metric in {expr}"
    wanted = ["SLA attainment per tier", "Latency per exit (p50, p95, p99)", "Degraded answers per tier",
              "Refusals by error code", "Queue depth per deployment"]
    assert set(wanted) <= set(titles), set(wanted) - set(titles)
    with pytest.raises(ValueError):
        parse("sum(rate(ray_emodistill_requests_total[5m])")  # the parser does reject broken PromQL


def test_selections_finds_metrics_and_groupings():
    expr = ("histogram_quantile(0.95, sum by (exit, le) (rate(a_bucket{x=\"1\"}[$__rate_interval]))) "
            "/ (max(b) or {__name__=\"c\"} * 0)")
    assert selections(expr) == [("a_bucket", ("exit", "le")), ("b", ()), ("c", ())]


# ---------------------------------------------------------------- against a real scrape

slow = pytest.mark.slow


@slow
def test_ray_names_the_application_metrics_as_the_dashboard_expects(probe):
    """Ray exports NAME as ray_NAME, counters with _total, histograms as _bucket/_sum/_count,
    with the code's tags and Serve's application, deployment and replica."""
    assert probe["metrics"], "the serving code defines no metric"
    assert any(m["attribute"].startswith("ServeMetrics.") for m in probe["metrics"])
    suffixes = {"Counter": ["_total"], "Gauge": [""], "Histogram": ["_bucket", "_sum", "_count"]}
    for metric in probe["metrics"]:
        for suffix in suffixes[metric["type"]]:
            exposed = f"ray_{metric['name']}{suffix}"
            assert exposed in probe["series"], f"{metric['attribute']} ({metric['name']}) is not exported as {exposed}"
            labels = probe["series"][exposed]
            assert set(metric["tags"]) | SERVE_TAGS <= labels, (exposed, labels)
        if metric["type"] == "Histogram":
            assert "le" in probe["series"][f"ray_{metric['name']}_bucket"]


@slow
def test_every_query_selects_exported_metrics_by_exported_labels(probe):
    problems = []
    for title, expr in queries():
        for metric, grouping in selections(expr):
            if metric in PLANNED:
                continue
            if metric not in probe["series"]:
                problems.append(f"{title}: {metric} is not exported")
                continue
            missing = set(grouping) - probe["series"][metric]
            if missing:
                problems.append(f"{title}: {metric} has no label {sorted(missing)}")
    for metric in variable_metrics():
        if metric not in probe["series"]:
            problems.append(f"template variable: {metric} is not exported")
    assert not problems, "\n".join(problems)


@slow
def test_every_metric_of_the_serving_code_is_on_the_dashboard(probe):
    shown = {metric for _, expr in queries() for metric, _ in selections(expr)}
    unshown = [m["name"] for m in probe["metrics"] if not any(s.startswith(f"ray_{m['name']}") for s in shown)]
    assert not unshown, f"the serving code exports {unshown}, which no panel of k8s/dashboard.py shows"
    still_planned = [m for m in PLANNED if m in probe["series"]]
    assert not still_planned, f"{still_planned} are exported now: remove them from PLANNED"
    if PLANNED:
        print(f"panels waiting for a metric: {PLANNED}")


def test_metrics_are_defined_in_metrics_classes_of_the_serve_app():
    """The probe records the metrics of the *Metrics classes of emodistill/serve/app.py: a
    Ray metric created anywhere else in the package would escape it (and the dashboard check)."""
    pattern = re.compile(r"\b(?:serve_metrics|metrics)\.(Counter|Gauge|Histogram)\(\s*\"([a-z_0-9]+)\"")
    defined = {}
    for path in (ROOT / "platform" / "emodistill").rglob("*.py"):
        for kind, name in pattern.findall(path.read_text()):
            defined[name] = path.relative_to(ROOT).as_posix()
    assert defined, "no metric definitions found: has the pattern drifted from the serving code?"
    import ast

    tree = ast.parse((ROOT / "platform/emodistill/serve/app.py").read_text())
    inside = {
        node.value
        for cls in tree.body if isinstance(cls, ast.ClassDef) and cls.name.endswith("Metrics")
        for node in ast.walk(cls) if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    outside = {name: where for name, where in defined.items() if name not in inside}
    assert not outside, f"Ray metrics defined outside the *Metrics classes of serve/app.py: {outside}"
