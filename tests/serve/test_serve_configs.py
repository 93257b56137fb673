"""Every file in serve_configs/ is a valid Serve config (Ray's own schema) whose args are
valid ServeArgs, and the app builder refuses what it cannot serve before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from emodistill.serve.app import build_app
from emodistill.serve.config import ServeArgs
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "serve_configs").glob("*.yaml"))


def test_there_are_local_and_cluster_configs():
    assert {p.name for p in CONFIGS} >= {"local.yaml", "cluster.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid_for_serve_and_for_the_builder(path):
    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    assert config.applications, path
    for app in config.applications:
        assert app.import_path == "emodistill.serve.app:build_app"
        args = ServeArgs.model_validate(app.args)
        assert args.checkpoint


def test_cluster_config_uses_gpus_autoscaling_and_api_keys():
    args = ServeArgs.model_validate(yaml.safe_load((ROOT / "serve_configs/cluster.yaml").read_text())["applications"][0]["args"])
    assert args.api_keys_env and args.deployment.autoscaling and args.deployment.num_gpus > 0
    assert all(args.options_for(e).num_gpus > 0 for e in args.exits)
    local = ServeArgs.model_validate(yaml.safe_load((ROOT / "serve_configs/local.yaml").read_text())["applications"][0]["args"])
    assert local.api_keys_env is None and local.deployment.num_gpus == 0


def test_serve_args_reject_mistakes():
    with pytest.raises(ValidationError, match="reserved"):
        ServeArgs(checkpoint="x", tiers={"auto": 10})
    with pytest.raises(ValidationError, match="default_tier"):
        ServeArgs(checkpoint="x", default_tier="fast")
    with pytest.raises(ValidationError, match="positive"):
        ServeArgs(checkpoint="x", tiers={"realtime": -1})
    with pytest.raises(ValidationError, match="exit_<block>"):
        ServeArgs(checkpoint="x", exits=["block3"])
    with pytest.raises(ValidationError, match="Extra inputs"):
        ServeArgs(checkpoint="x", tier={"realtime": 1})
    with pytest.raises(ValidationError, match="min_replicas"):
        ServeArgs(checkpoint="x", deployment={"autoscaling": {"min_replicas": 5, "max_replicas": 2}})


def test_builder_refuses_unknown_exits_and_a_missing_profile(served_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="has no \\['exit_9'\\]"):
        build_app({"checkpoint": served_checkpoint, "exits": ["exit_9"]})
    with pytest.raises(FileNotFoundError, match="emodistill evaluate"):
        build_app({"checkpoint": served_checkpoint, "profile": str(tmp_path / "nope.json")})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        build_app({"checkpoint": str(tmp_path / "missing")})
    app = build_app({"checkpoint": served_checkpoint, "exits": ["exit_1", "exit_4"]})
    assert app is not None
