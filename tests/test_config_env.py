"""${ENV} references in config values: expanded at validation, defaults, escapes, errors."""

from __future__ import annotations

import pytest

from emodistill.config import expand_env
from emodistill.serve.config import ServeArgs
from emodistill.train.config import TrainConfig


def test_expand_env_walks_mappings_and_lists():
    env = {"RUNS": "s3://runs", "EMPTY": ""}
    raw = {"a": ["${RUNS}/x", "${NOPE:-s3://d}/y", "${EMPTY:-fallback}", "$${RUNS}", 3, None], "b": {"c": "plain $x"}}
    assert expand_env(raw, env) == {"a": ["s3://runs/x", "s3://d/y", "fallback", "${RUNS}", 3, None], "b": {"c": "plain $x"}}
    with pytest.raises(ValueError, match="environment variable NOPE, which is not set"):
        expand_env("${NOPE}/x", env)


def test_configs_expand_when_validated(monkeypatch, tmp_path):
    monkeypatch.setenv("EMODISTILL_RUNS_URI", "s3://mine")
    monkeypatch.delenv("EMODISTILL_DATA_URI", raising=False)
    path = tmp_path / "t.yaml"
    path.write_text("data: {dataset: '${EMODISTILL_DATA_URI:-s3://emodistill-data}/iemocap4'}\n"
                    "run: {export_dir: '${EMODISTILL_RUNS_URI}/best'}\n")
    cfg = TrainConfig.from_yaml(path, ["run.storage_path=${EMODISTILL_RUNS_URI}"])
    assert cfg.data.dataset == "s3://emodistill-data/iemocap4"
    assert cfg.run.export_dir == "s3://mine/best" and cfg.run.storage_path == "s3://mine"
    assert "${" not in cfg.to_yaml(), "what is recorded is what ran"
    assert ServeArgs.model_validate({"checkpoint": "${EMODISTILL_RUNS_URI}/best"}).checkpoint == "s3://mine/best"
