"""`emodistill` console script. Each command parses arguments and calls the library."""

from __future__ import annotations

import json
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fast yet effective speech emotion recognition with self-distillation, on Ray.",
)


def _parse_blocks(text: str | None) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise typer.BadParameter(f"expected comma-separated block numbers like 1,3,6,12, got {text!r}") from err


@app.command()
def profile(
    arch: Optional[str] = typer.Option(None, help="Random-init shape: tiny or base (wav2vec2-base)."),
    backbone: Optional[str] = typer.Option(None, help="Hub id, local directory or s3:// prefix of a backbone."),
    family: str = typer.Option("wav2vec2", help="Model family used with --arch."),
    exits: Optional[str] = typer.Option(None, help="Comma-separated blocks to profile, e.g. 1,3,6,12 (default: all)."),
    seconds: float = typer.Option(3.0, min=0.1, help="Clip length in seconds."),
    repeats: int = typer.Option(20, min=1, help="Timed runs per model (after warm-up)."),
    warmup: int = typer.Option(3, min=0, help="Untimed runs before timing."),
    student_head: str = typer.Option("gru", help="Head type of the student exits: gru, lstm, conv or mean."),
    teacher_head: str = typer.Option("mean", help="Head type of the deepest exit."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch intra-op threads (default: torch's choice)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Cut the model at every exit and measure parameters and batch-1 latency of each."""
    import torch

    from emodistill.evaluate.latency import profile_exits
    from emodistill.evaluate.tables import profile_table
    from emodistill.model import BackboneConfig, EarlyExitModel, ModelConfig, load_backbone
    from emodistill.model.early_exit import resolve_spec

    if arch is not None and backbone is not None:
        raise typer.BadParameter("give --arch or --backbone, not both")
    if threads:
        torch.set_num_threads(threads)
    bb = BackboneConfig(pretrained=backbone) if backbone else BackboneConfig(arch=arch or "tiny", family=family)
    encoder = load_backbone(bb)
    depth = encoder.config.num_hidden_layers
    blocks = _parse_blocks(exits) or list(range(1, depth + 1))
    labels = ["anger", "happiness", "neutral", "sadness"]
    model = EarlyExitModel(encoder, resolve_spec(
        ModelConfig(backbone=bb, exits=blocks, student_head=student_head, teacher_head=teacher_head), labels, depth
    ))
    names = [f"exit_{b}" for b in blocks]
    report = profile_exits(model, names, seconds=seconds, warmup=warmup, repeats=repeats)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(profile_table(report))


@app.command()
def demo() -> None:
    """The main job on the embedded defaults (see README)."""
    from emodistill.demo import run_demo

    run_demo()


def main() -> None:
    """Console entry: known user errors print one line, not a traceback."""
    import sys

    try:
        app(standalone_mode=True)
    except (ValueError, FileNotFoundError, PermissionError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
