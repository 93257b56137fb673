"""`emodistill predict CKPT FILE_OR_DIR...`: label, scores, exit and latency of each file, no Ray.

    emodistill predict CKPT clips/                          one answer per clip
    emodistill predict CKPT call.wav --timeline --plot call.png    a recording's emotion timeline
    emodistill predict CKPT s3://bucket/calls/ --out s3://bucket/emotions/   an archive on Ray Data
"""

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
    max_seconds: Optional[float] = typer.Option(
        None, min=0.01, help="Refuse longer inputs, checked before decoding them in full (default: 30 s a clip, 24 h a --timeline recording)."
    ),
    timeline: bool = typer.Option(False, "--timeline", help="Each file is a recording: find the speech, window it, classify each segment."),
    segment: str = typer.Option("vad", "--segment", help="--timeline segments: vad (speech regions, windowed) or fixed (windows over everything)."),
    vad: str = typer.Option("silero", "--vad", help="Voice-activity detector for --segment vad: silero (silero-vad's model) or energy (no model)."),
    window: float = typer.Option(3.0, "--window", min=0.25, help="--timeline: seconds per window of long speech."),
    hop: float = typer.Option(1.5, "--hop", min=0.05, help="--timeline: seconds between window starts."),
    plot: Optional[str] = typer.Option(None, "--plot", help="--timeline: PNG of the timeline (a file for one input, else a directory)."),
    out: Optional[str] = typer.Option(
        None, "--out", help="Archive mode on Ray Data: write Parquet results and rejects here (local or s3://); inputs: a directory, s3:// prefix or ingested dataset."
    ),
    actors: int = typer.Option(1, "--actors", min=1, help="Archive mode: Ray Data actors holding the model."),
    actor_cpus: float = typer.Option(1.0, "--actor-cpus", min=0.01, help="Archive mode: CPUs per actor (a GPU each with --device cuda)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Clips (or segments) per model call."),
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
    if out is not None:
        from emodistill.inference.archive import ArchiveConfig, run_archive

        if len(inputs) != 1:
            raise typer.BadParameter("--out takes one input: a directory, an s3:// prefix or an ingested dataset")
        cfg = ArchiveConfig(
            model=model, source=inputs[0], out=out, exit=exit, budget_ms=budget_ms, device=device, precision=precision,
            threads=threads, actors=actors, num_cpus=actor_cpus, num_gpus=0.0 if device == "cpu" else 1.0, batch_size=batch_size, timeline=timeline, segment=segment, vad=vad,
            window=window, hop=hop, min_seconds=min_seconds, max_seconds=max_seconds,
        )
        report = run_archive(cfg)
        typer.echo(report.summary(), err=True)
        return
    if timeline:
        return _timeline(model, inputs, exit, budget_ms, device, precision, threads, as_json, as_csv, max_seconds,
                         segment, vad, window, hop, plot, batch_size)
    if plot is not None:
        raise typer.BadParameter("--plot draws a --timeline")
    max_seconds = 30.0 if max_seconds is None else max_seconds
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



def _timeline(model, inputs, exit, budget_ms, device, precision, threads, as_json, as_csv, max_seconds,
              segment, vad, window, hop, plot, batch_size) -> None:
    """--timeline: each input a recording; rows (start, end, label, scores, exit) per segment."""
    import os

    from emodistill.data.audio import AudioError, AudioLimits
    from emodistill.inference.files import expand_inputs
    from emodistill.inference.recognizer import EmotionRecognizer
    from emodistill.inference.segments import SegmentOptions
    from emodistill.inference.timeline import RECORDING_LIMITS, Timeline, csv_header, csv_row, iter_timeline

    if exit is not None and budget_ms is not None:
        raise typer.BadParameter("give --exit or --budget-ms, not both")
    try:
        options = SegmentOptions(segment=segment, vad=vad, window=window, hop=hop)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    limits = RECORDING_LIMITS if max_seconds is None else AudioLimits(min_seconds=0.0, max_seconds=max_seconds)
    found = expand_inputs(inputs)
    files = found.files
    recognizer = EmotionRecognizer.from_pretrained(model, exit=exit, budget_ms=budget_ms, device=device, precision=precision,
                                                   threads=threads, budget_seconds=window)
    if recognizer.selection is not None:
        s = recognizer.selection
        typer.echo(f"budget {s.budget_ms:g} ms -> {s.exit} ({s.latencies.latency_ms[s.exit]:.1f} ms p95 for a {window:g} s "
                   f"window on {s.latencies.device.name}, {s.latencies.source})", err=True)
    labels = recognizer.labels
    writer = None
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["file", *csv_header(labels), "error_code", "error"])
    if plot is not None and len(files) > 1:
        os.makedirs(plot, exist_ok=True)
    failed = 0
    for file in files:
        state = Timeline(source=file, labels=labels, exit=recognizer.exit)
        try:
            for seg in iter_timeline(recognizer, file, options, limits, batch_size=batch_size, state=state):
                state.segments.append(seg)
                if as_json:
                    print(json.dumps({"file": file, **seg.to_dict()}), flush=True)
                elif writer is not None:
                    writer.writerow([file, *csv_row(seg, labels), "", ""])
                else:
                    scores = " ".join(f"{label}={seg.scores[label]:.3f}" for label in labels)
                    print(f"{file}\t{seg.start:8.2f}-{seg.end:8.2f} s\t{seg.label}\t{scores}\t{seg.exit}", flush=True)
        except (AudioError, OSError) as err:
            failed += 1
            code, message = (err.reason, str(err)) if isinstance(err, AudioError) else ("unreadable", f"cannot read the file: {err}")
            if as_json:
                print(json.dumps({"file": file, "error": {"code": code, "message": message}}), flush=True)
            elif writer is not None:
                writer.writerow([file, *[""] * (len(labels) + 5), code, message])
            else:
                print(f"{file}\terror {code}: {message}", flush=True)
            continue
        speech = sum(e - s for s, e in state.speech)
        line = f"{file}: {state.duration:.1f} s, speech {speech:.1f} s, {len(state.segments)} segments ({recognizer.exit})"
        if plot is not None:
            target = plot if len(files) == 1 else os.path.join(plot, os.path.splitext(os.path.basename(file))[0] + ".png")
            line += f"; plot {state.plot(target)}"
        typer.echo(line, err=True)
    sys.stdout.flush()
    if failed:
        typer.echo(f"{len(files) - failed} of {len(files)} recordings done; {failed} failed", err=True)
        raise typer.Exit(1)
