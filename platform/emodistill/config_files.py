"""The config file types of the project: which one a file is, its effective contents, its JSON Schema.

Four kinds of YAML file configure emodistill:

- ``train``: :class:`~emodistill.train.config.TrainConfig` (``jobs/configs/*.yaml``,
  ``emodistill train --config``);
- ``tune``: :class:`~emodistill.tune.config.SweepConfig` (``jobs/configs/tune_*.yaml``);
- ``serve``: a Ray Serve config file (Ray's ``ServeDeploySchema``) whose applications'
  ``args`` are :class:`~emodistill.serve.config.ServeArgs` (``serve_configs/*.yaml``);
- ``evaluate``: :class:`~emodistill.evaluate.report.EvaluateConfig`.

``emodistill config show`` prints a file's effective config (defaults filled in,
``key=value`` overrides and ``${ENV}`` references applied); ``emodistill config schema``
(``make schemas``) writes one JSON Schema per kind into ``schemas/``, generated from the
pydantic models, for editor completion: a YAML file whose first line is
``# yaml-language-server: $schema=<relative path to schemas/KIND.schema.json>`` gets
completion and checks in editors that use the YAML language server (VS Code, Neovim, ...).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from emodistill.config import apply_overrides, load_yaml

Kind = Literal["train", "tune", "serve", "evaluate"]
KINDS: tuple[str, ...] = get_args(Kind)
SCHEMA_DIR = "schemas"
MODELINE = "# yaml-language-server: $schema="
_TRAIN_KEYS = {"model", "loss", "data", "optim", "scaling", "run"}


def schema_file(kind: str) -> str:
    """The file name of a kind's schema: ``train.schema.json``."""
    return f"{kind}.schema.json"


def read_raw(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file."""
    with open(path) as fh:
        try:
            raw = load_yaml(fh.read()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def detect_kind(raw: dict[str, Any], where: str = "the file") -> str:
    """Which kind of config ``raw`` is, from its top-level keys."""
    if "applications" in raw:
        return "serve"
    if "train_config" in raw:
        return "tune"
    if "checkpoint" in raw and "dataset" in raw:
        return "evaluate"
    if _TRAIN_KEYS & set(raw):
        return "train"
    raise ValueError(
        f"cannot tell which kind of config {where} is (its top-level keys: {sorted(raw)}); pass --kind {'|'.join(KINDS)}"
    )


def _model(kind: str):
    """The pydantic model of a kind (imported on use: the evaluate one pulls in torch)."""
    if kind == "train":
        from emodistill.train.config import TrainConfig

        return TrainConfig
    if kind == "tune":
        from emodistill.tune.config import SweepConfig

        return SweepConfig
    if kind == "evaluate":
        from emodistill.evaluate.report import EvaluateConfig

        return EvaluateConfig
    if kind == "serve":
        from emodistill.serve.config import ServeArgs

        return ServeArgs
    raise ValueError(f"unknown config kind {kind!r}; one of {list(KINDS)}")


def effective(raw: dict[str, Any], kind: str, overrides: list[str] | None = None, app: str | None = None) -> dict[str, Any]:
    """The validated config with every default filled in, as plain data.

    ``overrides`` are ``key.sub=value`` changes applied before validation (for a Serve
    config: to the ``args`` of application ``app``, which may be left out when there is
    only one). ``${ENV}`` references are expanded by the validation.
    """
    overrides = list(overrides or [])
    if kind != "serve":
        return _model(kind).model_validate(apply_overrides(raw, overrides)).model_dump(mode="json")
    from ray.serve.schema import ServeDeploySchema

    ServeArgs = _model("serve")
    ServeDeploySchema.model_validate(raw)  # Ray's own checks of the whole file
    out = copy.deepcopy(raw)
    apps = out.get("applications") or []
    names = [a.get("name") for a in apps]
    if overrides:
        if app is None and len(apps) != 1:
            raise ValueError(f"the Serve config has applications {names}: name the one to override with --app")
        if app is not None and app not in names:
            raise ValueError(f"no application {app!r} in the Serve config; it has {names}")
    for entry in apps:
        changes = overrides if overrides and (app is None or entry.get("name") == app) else []
        entry["args"] = ServeArgs.model_validate(apply_overrides(entry.get("args") or {}, changes)).model_dump(mode="json")
    return out


def load_effective(
    path: str | Path, kind: str | None = None, overrides: list[str] | None = None, app: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(kind, effective config) of a config file; the kind is detected when not given."""
    raw = read_raw(path)
    kind = kind or detect_kind(raw, str(path))
    return kind, effective(raw, kind, overrides, app)


# ---------------------------------------------------------------- JSON Schemas


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a config file of ``kind``."""
    model = _model(kind)
    if kind == "serve":
        schema = _serve_schema(model)
    else:
        schema = model.model_json_schema(mode="validation")
    if kind == "train":
        _allow_loss_preset(schema)
    from emodistill import __version__

    header = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"emodistill {kind} config",
        "description": f"{schema.get('description', '').strip()} (emodistill {__version__}; "
        f"generated by `emodistill config schema` from the pydantic models)".strip(),
    }
    return {**header, **{k: v for k, v in schema.items() if k not in ("title", "description")}}


def _serve_schema(serve_args) -> dict[str, Any]:
    """Ray's ServeDeploySchema with every application's ``args`` typed as ServeArgs."""
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_json_schema(mode="validation")
    args = serve_args.model_json_schema(mode="validation", ref_template="#/$defs/{model}")
    defs = schema.setdefault("$defs", {})
    for name, definition in args.pop("$defs", {}).items():
        if name in defs and defs[name] != definition:
            raise ValueError(f"ServeArgs and Ray's Serve schema both define {name!r}")
        defs[name] = definition
    defs["ServeArgs"] = args
    app = defs["ServeApplicationSchema"]["properties"]
    app["args"] = {
        "$ref": "#/$defs/ServeArgs",
        "description": "Arguments of emodistill.serve.app:build_app (emodistill.serve.config.ServeArgs).",
    }
    schema["description"] = "A Ray Serve config file whose applications run emodistill.serve.app:build_app."
    return schema


def _allow_loss_preset(schema: dict[str, Any]) -> None:
    """`loss: {preset: paper, ...}` is accepted by TrainConfig (a preset with changes)."""
    from emodistill.losses import PRESETS

    loss = schema["$defs"]["LossConfig"]
    loss["properties"] = {
        "preset": {
            "enum": sorted(PRESETS),
            "description": "Start from this preset; the other keys given change it.",
        },
        **loss["properties"],
    }


def render_schemas() -> dict[str, str]:
    """File name -> text of every kind's schema (what ``schemas/`` must hold)."""
    return {schema_file(kind): json.dumps(json_schema(kind), indent=2, ensure_ascii=False) + "\n" for kind in KINDS}


def write_schemas(out_dir: str | Path, check: bool = False) -> list[str]:
    """Write the schemas into ``out_dir``; return the files that changed (with ``check``:
    that would change, writing nothing)."""
    out = Path(out_dir)
    changed = []
    for name, text in render_schemas().items():
        path = out / name
        if not path.is_file() or path.read_text() != text:
            changed.append(name)
            if not check:
                out.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return changed


def modeline_kind(text: str) -> str | None:
    """The kind whose schema a file's first line names (``# yaml-language-server: $schema=...``)."""
    first = text.split("\n", 1)[0]
    if not first.startswith(MODELINE):
        return None
    name = first[len(MODELINE) :].strip().rsplit("/", 1)[-1]
    for kind in KINDS:
        if name == schema_file(kind):
            return kind
    raise ValueError(f"the schema line names {name!r}, which is none of {[schema_file(k) for k in KINDS]}")
