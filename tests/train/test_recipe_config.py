"""The CPU recipe's config and its training-time augmentation inside the training step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import padded_batch, tiny_model
from emodistill.data.augment import AugmentConfig
from emodistill.losses import LossConfig, SelfDistillationLoss
from emodistill.train.config import OptimConfig, TrainConfig
from emodistill.train.step import TrainStep

ROOT = Path(__file__).resolve().parents[2]


def test_demo_recipe_validates_and_builds():
    from emodistill.model import build_model

    cfg = TrainConfig.from_yaml(ROOT / "jobs/configs/demo_cpu.yaml")
    assert cfg.model.backbone.arch == "small" and cfg.model.backbone.frontend == "logmel"
    assert cfg.model.student_head == cfg.model.teacher_head == "stats"
    model = build_model(cfg.model, ["a", "b", "c", "d"])
    # deep enough that exit_1 is a fraction of the teacher's cost (the trade-off shows)
    assert model.exit_names == ["exit_1", "exit_3", "exit_5", "exit_7"]


def test_embedding_distillation_needs_equal_pooled_widths():
    base = {"data": {"dataset": "d"}, "model": {"exits": [1], "student_head": "stats", "teacher_head": "mean"}}
    with pytest.raises(ValueError, match="feature_level=linear"):
        TrainConfig.model_validate(base)
    TrainConfig.model_validate({**base, "loss": {"feature_level": "linear"}})
    TrainConfig.model_validate({**base, "loss": {"feature_weight": 0.0}})
    TrainConfig.model_validate({**base, "model": {**base["model"], "teacher_head": "attentive"}})


def _step(augment):
    torch.manual_seed(0)
    model = tiny_model(exits=[2], student_head="mean")
    return model, TrainStep(model, SelfDistillationLoss(LossConfig()), OptimConfig(warmup_ratio=0), 10, augment=augment)


def test_training_step_augments_what_the_model_sees_seeded_by_torch():
    augment = AugmentConfig(speed=(0.8, 0.8), noise_prob=1.0, time_masks=1)
    x, mask = padded_batch([8000, 6000])
    batch = {"input_values": x, "attention_mask": mask, "labels": torch.tensor([0, 1])}
    seen = []
    for _ in range(2):
        model, step = _step(augment)
        model.register_forward_pre_hook(lambda _m, args: seen.append((args[0].clone(), args[1].clone())))
        torch.manual_seed(5)
        loss = step(batch)
        assert torch.isfinite(loss.total)
    (a, a_mask), (b, b_mask) = seen
    assert torch.equal(a, b) and torch.equal(a_mask, b_mask), "the same torch seed augments the same way"
    assert a_mask.sum(dim=1).tolist() == [pytest.approx(10000, abs=2), pytest.approx(7500, abs=2)]
    assert not torch.equal(a[:, :8000], x), "the model saw augmented clips"
    assert torch.equal(batch["input_values"], x), "the caller's batch is left alone"


def test_no_augmentation_when_off():
    model, step = _step(AugmentConfig())
    assert step.augment is None
    seen = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x, mask = padded_batch([4000, 3000])
    step({"input_values": x, "attention_mask": mask, "labels": torch.tensor([0, 1])})
    assert torch.equal(seen[0], x)
    assert np.isfinite(seen[0].numpy()).all()


def test_vtlp_is_set_on_the_log_mel_front_end_and_refused_without_one():
    from emodistill.data.augment import apply_vtlp
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    base = {"data": {"dataset": "d"}, "augment": {"vtlp": [0.9, 1.1]}}
    with pytest.raises(ValueError, match="frontend: logmel"):
        TrainConfig.model_validate({**base, "model": {"backbone": {"arch": "tiny", "frontend": "conv"}}})
    cfg = TrainConfig.model_validate({**base, "model": {"backbone": {"arch": "tiny", "frontend": "logmel"}, "exits": [2]}})
    model = build_model(cfg.model, ["a", "b"])
    step = TrainStep(model, SelfDistillationLoss(cfg.loss), OptimConfig(warmup_ratio=0), 10, augment=cfg.augment)
    assert model.backbone.feature_extractor.vtlp == (0.9, 1.1)
    assert step.augment is None, "no waveform augmentation to run: VTLP happens inside the model"
    conv = build_model(ModelConfig(backbone=BackboneConfig(arch="tiny"), exits=[2]), ["a", "b"])
    with pytest.raises(ValueError, match="log-mel front-end"):
        apply_vtlp(conv, cfg.augment)
