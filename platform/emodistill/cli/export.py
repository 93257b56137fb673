"""`emodistill export CKPT OUT`: one exit as ONNX (fp32/int8), TorchScript or safetensors, verified."""

from __future__ import annotations

from typing import Optional

import typer


def export(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory (local or s3://)."),
    out: str = typer.Argument(..., help="Directory to write: model file, config.json, preprocessor_config.json, README.md."),
    exit: Optional[str] = typer.Option(None, "--exit", help="Exit to export, e.g. exit_3."),
    budget_ms: Optional[float] = typer.Option(
        None, "--budget-ms", help="Instead of --exit: the deepest exit whose p95 latency on --device fits this budget."
    ),
    budget_seconds: float = typer.Option(3.0, min=0.1, help="Clip length (s) the budget applies to."),
    device: str = typer.Option("cpu", help="Device the latency is measured on: cpu, cuda, cuda:<n>."),
    format: str = typer.Option("onnx", "--format", help="onnx, torchscript or safetensors."),
    quantize: str = typer.Option("none", help="none, int8 (onnx) or bf16 (torchscript, safetensors)."),
    int8_convs: bool = typer.Option(
        False, "--int8-convs", help="With int8: also quantize the conv encoder (static, calibrated); faster, verified."
    ),
    exporter: str = typer.Option("torchscript", help="torch.onnx exporter: torchscript or dynamo."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads (default: torch's choice)."),
    verify_clips: int = typer.Option(256, min=4, help="Most evaluation clips to verify on."),
    repeats: int = typer.Option(20, min=3, help="Timed runs of the exported model (after warm-up)."),
) -> None:
    """Export one exit's cut model, verify it against the checkpoint, measure it, and
    write a directory a Hugging Face user recognises."""
    from emodistill.inference.export import ExportConfig, ExportVerificationError, export as run_export

    cfg = ExportConfig(
        checkpoint=checkpoint, out=out, exit=exit, budget_ms=budget_ms, budget_seconds=budget_seconds, device=device,
        format=format, quantize=quantize, int8_convs=int8_convs, exporter=exporter, overwrite=overwrite, threads=threads, verify_clips=verify_clips, repeats=repeats,
    )
    try:
        run_export(cfg, log=typer.echo)
    except ExportVerificationError:
        typer.echo("error: the exported model fails verification (above); nothing was written", err=True)
        raise typer.Exit(1)
