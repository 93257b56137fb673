"""`emodistill config show|schema`, `--version`, choices in `--help`, and the checked-in
JSON Schemas of the config files (schemas/): generated from the pydantic models, current,
and accepting every config file of the repository."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from emodistill import __version__
from emodistill.cli.main import app
from emodistill.config_files import (
    KINDS,
    MODELINE,
    detect_kind,
    effective,
    modeline_kind,
    read_raw,
    render_schemas,
    schema_file,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
CONFIG_FILES = sorted([*(ROOT / "jobs/configs").glob("*.yaml"), *(ROOT / "serve_configs").glob("*.yaml")])
runner = CliRunner()


def _run(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env)


def test_version():
    result = _run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"emodistill {__version__}"


def test_help_shows_choices_as_choices():
    assert "<train|tune|serve|evaluate>" in _run("config", "show", "--help").output
    ingest = _run("ingest", "--help").output.replace("\n", "").replace("│", "").replace(" ", "")
    assert "<auto|csv|" in ingest and "|esd>" in ingest
    bad = _run("ingest", "a", "b", "--format", "wav")
    assert bad.exit_code == 2 and "wav" in bad.output


def test_show_prints_the_effective_train_config_with_overrides():
    result = _run("config", "show", "--config", "jobs/configs/demo_cpu.yaml", "optim.epochs=3", "seed=7")
    assert result.exit_code == 0, result.output
    header, body = result.output.split("\n", 1)
    assert header == "# effective train config of jobs/configs/demo_cpu.yaml with optim.epochs=3 seed=7"
    shown = yaml.safe_load(body)
    assert shown["optim"]["epochs"] == 3 and shown["seed"] == 7
    assert shown["optim"]["grad_accum"] == 1, "defaults the file leaves out are shown"
    assert shown["loss"]["temperature"] == 2.0, "the preset is resolved"


def test_show_detects_every_kind_of_the_repository():
    kinds = {p.name: detect_kind(read_raw(p)) for p in CONFIG_FILES}
    assert kinds["tune_gpu.yaml"] == "tune" and kinds["cluster.yaml"] == "serve" and kinds["demo_cpu.yaml"] == "train"
    assert detect_kind({"checkpoint": "c", "dataset": "d"}) == "evaluate"
    with pytest.raises(ValueError, match="pass --kind"):
        detect_kind({"something": 1})


def test_show_serve_config_applies_overrides_to_the_args_and_expands_env(tmp_path):
    result = _run(
        "config", "show", "--config", "serve_configs/cluster.yaml", "--json", "tiers.realtime=30",
        env={"EMODISTILL_RUNS_URI": "s3://my-runs"},
    )
    assert result.exit_code == 0, result.output
    (app_cfg,) = json.loads(result.output)["applications"]
    assert app_cfg["args"]["tiers"]["realtime"] == 30
    assert app_cfg["args"]["checkpoint"] == "s3://my-runs/wav2vec2-base-gpu/best"
    assert app_cfg["args"]["retry_after_s"] == 1, "ServeArgs defaults are filled in"
    two = {"applications": [{"name": "a", "import_path": "m:f", "args": {"checkpoint": "x"}},
                            {"name": "b", "import_path": "m:f", "route_prefix": "/b", "args": {"checkpoint": "y"}}]}
    with pytest.raises(ValueError, match="--app"):
        effective(two, "serve", ["tiers.realtime=3"])
    out = effective(two, "serve", ["checkpoint=z"], app="b")
    assert [a["args"]["checkpoint"] for a in out["applications"]] == ["x", "z"]


def test_show_reports_mistakes_in_one_line(tmp_path):
    result = _run("config", "show", "--config", "jobs/configs/demo_cpu.yaml", "optim.epochz=3")
    assert result.exit_code != 0 and "epochz" in str(result.exception)
    result = _run("config", "show", "--config", "jobs/configs/demo_cpu.yaml", "--kind", "yaml")
    assert result.exit_code == 2


def test_checked_in_schemas_are_current():
    rendered = render_schemas()
    assert sorted(rendered) == sorted(p.name for p in SCHEMAS.glob("*.schema.json")) == sorted(schema_file(k) for k in KINDS)
    stale = [name for name, text in rendered.items() if (SCHEMAS / name).read_text() != text]
    assert not stale, f"schemas/{stale} differ from the pydantic models: run `make schemas`"
    check = _run("config", "schema", "--check", "--out", str(SCHEMAS))
    assert check.exit_code == 0, check.output


def test_schema_check_fails_on_a_stale_schema(tmp_path):
    assert _run("config", "schema", "--out", str(tmp_path)).exit_code == 0
    (tmp_path / "tune.schema.json").write_text("{}\n")
    result = _run("config", "schema", "--check", "--out", str(tmp_path))
    assert result.exit_code == 1 and "tune.schema.json" in result.output and "make schemas" in result.output


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / schema_file(kind)).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_file_passes_its_schema_and_names_it(path):
    text = path.read_text()
    raw = yaml.safe_load(text)
    kind = detect_kind(raw)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator(kind).iter_errors(raw)]
    assert not errors, errors
    if text.startswith(MODELINE):  # an editor finds the schema at this relative path
        assert modeline_kind(text) == kind
        target = (path.parent / text.split("\n", 1)[0][len(MODELINE):].strip()).resolve()
        assert target == (SCHEMAS / schema_file(kind)).resolve()


def test_schemas_reject_what_the_models_reject():
    train = _validator("train")
    good = {"data": {"dataset": "d"}, "loss": {"preset": "paper", "kd_weight": 0.5}}
    assert not list(train.iter_errors(good))
    assert list(train.iter_errors({"data": {"dataset": "d"}, "optim": {"epochz": 3}})), "unknown key"
    assert list(train.iter_errors({"data": {"dataset": "d"}, "optim": {"optimizer": "sgd"}})), "not a choice"
    assert list(train.iter_errors({"data": {"dataset": "d"}, "loss": {"preset": "nope"}})), "unknown preset"
    serve = _validator("serve")
    app_ = {"name": "a", "import_path": "emodistill.serve.app:build_app", "args": {"checkpoint": "c"}}
    assert not list(serve.iter_errors({"applications": [app_]}))
    assert list(serve.iter_errors({"applications": [{**app_, "args": {"checkpoint": "c", "tier": {}}}]})), "args are ServeArgs"
    assert list(serve.iter_errors({"applications": [{**app_, "args": {"checkpoint": "c", "device": "tpu"}}]}))
