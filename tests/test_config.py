"""Every config model documents every field, rejects unknown keys, takes overrides."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import emodistill
from emodistill.config import Config, apply_overrides


def _all_configs() -> list[type[Config]]:
    for info in pkgutil.walk_packages(emodistill.__path__, "emodistill."):
        importlib.import_module(info.name)
    seen, stack = [], list(Config.__subclasses__())
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


def test_configs_found():
    names = {c.__name__ for c in _all_configs()}
    assert {"ModelConfig", "BackboneConfig", "LossConfig", "CheckpointConfig", "ExitModelSpec", "SweepConfig"} <= names


@pytest.mark.parametrize("cls", _all_configs(), ids=lambda c: c.__name__)
def test_every_field_has_a_description(cls):
    missing = [name for name, field in cls.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"{cls.__name__} fields without description: {missing}"


def test_unknown_keys_are_rejected():
    from emodistill.losses import LossConfig

    with pytest.raises(ValueError, match="tempreature"):
        LossConfig.model_validate({"tempreature": 2})


def test_overrides_are_typed_and_nested():
    raw = {"model": {"exits": [1]}, "loss": {"kd_weight": 1.0}}
    out = apply_overrides(raw, ["model.exits=[2, 3]", "loss.kd_weight=0.5", "loss.detach_teacher=false", "new.key=x"])
    assert out == {
        "model": {"exits": [2, 3]},
        "loss": {"kd_weight": 0.5, "detach_teacher": False},
        "new": {"key": "x"},
    }
    assert raw["model"]["exits"] == [1], "the input mapping is not modified"
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(raw, ["model.exits"])


def test_from_yaml_validates(tmp_path):
    from emodistill.model import ModelConfig

    path = tmp_path / "m.yaml"
    path.write_text("backbone: {arch: tiny}\nexits: [3, 1, 1]\n")
    cfg = ModelConfig.from_yaml(path, ["student_head=lstm"])
    assert cfg.exits == [1, 3] and cfg.student_head == "lstm"
    path.write_text("backbone: {arch: tiny, pretrained: x}\n")
    with pytest.raises(ValueError, match="exactly one"):
        ModelConfig.from_yaml(path)
