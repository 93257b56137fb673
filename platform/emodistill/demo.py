"""`make demo`: the main job on the embedded defaults.

Today: build the tiny early-exit model, run a forward pass at every exit and print a
per-exit table of parameters and batch-1 latency of each cut model.
"""

from __future__ import annotations

import typer

from emodistill.evaluate.latency import profile_exits
from emodistill.evaluate.tables import profile_table
from emodistill.model import BackboneConfig, ModelConfig, build_model


def run_demo() -> None:
    labels = ["anger", "happiness", "neutral", "sadness"]
    model = build_model(ModelConfig(backbone=BackboneConfig(arch="tiny"), exits=[1, 2, 3]), labels)
    typer.echo(f"built tiny early-exit model: exits {model.exit_names}, teacher {model.spec.teacher}")
    report = profile_exits(model, seconds=3.0, repeats=20)
    typer.echo(profile_table(report))
