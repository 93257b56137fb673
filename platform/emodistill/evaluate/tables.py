"""Plain-text tables for the terminal and Markdown reports."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(list(headers)), sep, *(line(r) for r in cells)])


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _device(report: dict) -> str:
    d = report.get("device") or {}
    if d.get("kind") == "cuda":
        return f"cuda, {d.get('name', '')}"
    return f"{report['threads']} threads"


def profile_table(report: dict) -> str:
    """Per exit: params and latency of the cut model, against the full model (every exit
    computed, as the authors' code always runs) and against the deepest cut profiled."""
    full = report["full"]
    deepest = max(report["exits"].values(), key=lambda row: row["block"])
    rows = []
    for name, row in report["exits"].items():
        rows.append(
            [
                name,
                row["block"],
                f"{row['params'] / 1e6:.2f}M",
                f"{100 * row['params'] / full['params']:.0f}%",
                row["latency_ms_p50"],
                row["latency_ms_p95"],
                f"{deepest['latency_ms_p50'] / row['latency_ms_p50']:.2f}x",
                f"{full['latency_ms_p50'] / row['latency_ms_p50']:.2f}x",
            ]
        )
    rows.append(["full", "-", f"{full['params'] / 1e6:.2f}M", "100%", full["latency_ms_p50"], full["latency_ms_p95"], "-", "1.00x"])
    conv = report["conv_encoder"]["latency_ms_p50"]
    header = (
        f"clip {report['seconds']} s, batch 1, {_device(report)}; "
        f"conv encoder alone {conv:.1f} ms p50 = {100 * conv / deepest['latency_ms_p50']:.0f}% of exit_{deepest['block']}, "
        f"{100 * conv / full['latency_ms_p50']:.0f}% of the full model\n"
    )
    return header + markdown_table(
        ["exit", "block", "params", "of full", "p50 ms", "p95 ms", f"vs exit_{deepest['block']}", "vs full"], rows
    )
