"""`emodistill config show|schema`: what a config file means, and its JSON Schema."""

from __future__ import annotations

import json
from typing import Literal, Optional

import typer

from emodistill.config_files import KINDS, SCHEMA_DIR

config_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Config files: print the effective config, write the JSON Schemas.",
)

KindChoice = Literal[KINDS]  # type: ignore[valid-type]


@config_app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def show(
    ctx: typer.Context,
    config: str = typer.Option(..., "--config", help="A config YAML: train, tune, serve or evaluate."),
    kind: Optional[KindChoice] = typer.Option(None, help="The kind of config (default: told from its keys)."),
    app_name: Optional[str] = typer.Option(
        None, "--app", help="Serve configs: the application whose args the overrides change (default: the only one)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML."),
) -> None:
    """Print the effective config: every default filled in, key=value overrides and
    ${ENV} references applied, validated as the command that reads it would."""
    import yaml

    from emodistill.config_files import load_effective

    found, data = load_effective(config, kind, list(ctx.args), app_name)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"# effective {found} config of {config}" + (f" with {' '.join(ctx.args)}" if ctx.args else ""))
    typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip("\n"))


@config_app.command()
def schema(
    out: str = typer.Option(SCHEMA_DIR, help="Folder to write <kind>.schema.json into."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 when a schema is out of date."),
) -> None:
    """Write a JSON Schema per config kind (train, tune, serve, evaluate), generated from the
    pydantic models, for editor completion (`# yaml-language-server: $schema=...`)."""
    from emodistill.config_files import write_schemas

    changed = write_schemas(out, check=check)
    if check and changed:
        typer.echo(f"out of date in {out}/: {', '.join(changed)}; run `make schemas`", err=True)
        raise typer.Exit(1)
    verb = "would change" if check else "wrote"
    typer.echo(f"{verb} {', '.join(changed)}" if changed else f"{out}/ is up to date ({len(KINDS)} schemas)")
