"""`emodistill predict CKPT FILE_OR_DIR...`: label, scores, exit and latency of each file, no Ray."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from typing import Optional

import typer


def predict(
    model: str = typer.Argument(..., help="Checkpoint or exported directory (local or s3://)."),
    inputs: list[str] = typer.Argument(..., help="Audio files, directories (searched recursively) or quoted globs ('clips/**/*.wav')."),
    exit: Optional[str] = typer.Option(None, "--exit", help="Exit to answer from, e.g. exit_3 (default: the deepest)."),
    budget_ms: Optional[float] = typer.Option(
        None, "--budget-ms", min=0.001, help="Use the deepest exit whose p95 latency on --device fits this budget (3 s clip)."
    ),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:<n>."),
    precision: Optional[str] = typer.Option(None, help="fp32 or bf16 (torch runtime of a checkpoint; default fp32)."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads (default: torch's choice)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header row."),
    min_seconds: float = typer.Option(0.25, min=0.0, help="Refuse shorter clips."),
    max_seconds: float = typer.Option(30.0, min=0.01, help="Refuse longer clips (checked before decoding them in full)."),
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress", help="Progress bar on stderr (default: for directories and globs, on a terminal)."
    ),
) -> None:
    """Predict the emotion of each audio file; a file that fails is reported with its
    reason and the rest carry on (exit status 1 at the end if any failed)."""
    from tqdm import tqdm

    from emodistill.data.audio import AudioLimits
    from emodistill.inference.files import expand_inputs, predict_files
    from emodistill.inference.recognizer import EmotionRecognizer

    if as_json and as_csv:
        raise typer.BadParameter("give --json or --csv, not both")
    if exit is not None and budget_ms is not None:
        raise typer.BadParameter("give --exit or --budget-ms, not both")
    if precision not in (None, "fp32", "bf16"):
        raise typer.BadParameter(f"--precision is fp32 or bf16, got {precision!r}")
    limits = AudioLimits(min_seconds=min_seconds, max_seconds=max_seconds)
    found = expand_inputs(inputs)
    recognizer = EmotionRecognizer.from_pretrained(
        model, exit=exit, budget_ms=budget_ms, device=device, precision=precision, threads=threads, limits=limits
    )
    if recognizer.selection is not None:
        s = recognizer.selection
        typer.echo(f"budget {s.budget_ms:g} ms -> {s.exit} ({s.latencies.latency_ms[s.exit]:.1f} ms p95 on "
                   f"{s.latencies.device.name}, {s.latencies.source})", err=True)
    labels = recognizer.labels
    out = sys.stdout
    writer = None
    if as_csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file", "label", "exit", "latency_ms", "seconds", *[f"score_{l}" for l in labels], "error_code", "error"])
    show = progress if progress is not None else (found.expanded and sys.stderr.isatty())
    bar = tqdm(total=len(found.files), unit="file", file=sys.stderr, disable=not show, dynamic_ncols=True)
    failures: Counter[str] = Counter()
    for result in predict_files(recognizer, found.files):
        if not result.ok:
            failures[result.code or "error"] += 1
        line = _format(result, labels, as_json, writer)
        if line is not None:
            if show:
                bar.write(line, file=out)
            else:
                out.write(line + "\n")
        bar.update(1)
    bar.close()
    out.flush()
    total = len(found.files)
    if failures:
        reasons = ", ".join(f"{code} {n}" for code, n in failures.most_common())
        typer.echo(f"{total - sum(failures.values())} of {total} files predicted; {sum(failures.values())} failed ({reasons})", err=True)
        raise typer.Exit(1)
    if found.expanded or total > 1:
        typer.echo(f"{total} files predicted with {recognizer.exit} ({recognizer.runtime.name}, {recognizer.device})", err=True)


def _format(result, labels: list[str], as_json: bool, writer) -> str | None:
    p = result.prediction
    if as_json:
        if p is None:
            return json.dumps({"file": result.file, "error": {"code": result.code, "message": result.message}})
        return json.dumps({"file": result.file, "label": p.label, "scores": p.scores, "exit": p.exit,
                           "latency_ms": p.latency_ms, "seconds": p.seconds})
    if writer is not None:
        if p is None:
            writer.writerow([result.file, "", "", "", "", *[""] * len(labels), result.code, result.message])
        else:
            writer.writerow([result.file, p.label, p.exit, p.latency_ms, p.seconds, *[p.scores[l] for l in labels], "", ""])
        return None
    if p is None:
        return f"{result.file}\terror {result.code}: {result.message}"
    scores = " ".join(f"{label}={p.scores[label]:.3f}" for label in labels)
    return f"{result.file}\t{p.label}\t{scores}\t{p.exit}\t{p.latency_ms:.1f} ms"

