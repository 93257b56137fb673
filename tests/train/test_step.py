"""The training step without Ray: it learns, accumulates, schedules and resumes."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import padded_batch, tiny_model
from emodistill.losses import LossConfig, SelfDistillationLoss
from emodistill.train.config import OptimConfig
from emodistill.train.step import TrainStep, lr_factor, param_groups


def batch(n=4, seed=0):
    x, mask = padded_batch([8000 - 500 * i for i in range(n)], seed=seed)
    return {"input_values": x, "attention_mask": mask, "labels": torch.arange(n) % 4}


def quiet_model():
    """eval mode: no dropout anywhere (HF attention dropout is functional), gradients still flow."""
    return tiny_model().eval()


def test_loss_decreases_on_a_fixed_batch():
    model = quiet_model()
    step = TrainStep(model, SelfDistillationLoss(LossConfig()), OptimConfig(lr_backbone=5e-4, lr_heads=2e-3, warmup_ratio=0), 20)
    b = batch()
    losses = [step(b).total.item() for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0]
    assert step.optimizer_steps == 12


def test_gradient_accumulation_matches_one_big_batch():
    cfg = OptimConfig(lr_backbone=1e-3, lr_heads=1e-3, warmup_ratio=0, schedule="constant", max_grad_norm=None, optimizer="adam")
    full = batch(4)
    halves = [{k: v[:2] for k, v in full.items()}, {k: v[2:] for k, v in full.items()}]
    a, b = quiet_model(), quiet_model()
    b.load_state_dict(a.state_dict())
    # BatchNorm-free heads and a mean-reduced loss: two half batches accumulate to one batch
    # (padding differs between the two layouts, but padded batches equal clips one by one)
    one = TrainStep(a, SelfDistillationLoss(LossConfig()), cfg, 1)
    acc = TrainStep(b, SelfDistillationLoss(LossConfig()), cfg.model_copy(update={"grad_accum": 2}), 1)
    # plain SGD shows the accumulated gradient itself (Adam's first step would amplify noise)
    one.optimizer = torch.optim.SGD(a.parameters(), lr=1.0)
    acc.optimizer = torch.optim.SGD(b.parameters(), lr=1.0)
    one(full)
    acc(halves[0])
    assert acc.optimizer_steps == 0
    acc(halves[1])
    assert acc.optimizer_steps == 1
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_schedule_warms_up_then_decays():
    cfg = OptimConfig(warmup_ratio=0.2, schedule="linear")
    factors = [lr_factor(s, 10, cfg) for s in range(10)]
    assert factors[0] == 0.5 and factors[1] == 1.0
    assert factors[2:] == sorted(factors[2:], reverse=True) and factors[-1] < 0.2
    assert lr_factor(5, 10, cfg.model_copy(update={"schedule": "constant"})) == 1.0
    cos = [lr_factor(s, 10, cfg.model_copy(update={"schedule": "cosine"})) for s in range(10)]
    assert cos[2] == 1.0 and cos[-1] < 0.1


def test_backbone_and_heads_get_their_own_learning_rates():
    model = tiny_model()
    groups = param_groups(model, OptimConfig(lr_backbone=1e-5, lr_heads=1e-3, weight_decay=0.1))
    by_name = {(g["name"], g["weight_decay"]): g for g in groups}
    assert by_name[("backbone", 0.1)]["lr"] == 1e-5 and by_name[("heads", 0.1)]["lr"] == 1e-3
    assert ("backbone", 0.0) in by_name, "biases and norms are not decayed"
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_state_dict_resumes_exactly():
    cfg = OptimConfig(warmup_ratio=0.1)
    a = quiet_model()
    step_a = TrainStep(a, SelfDistillationLoss(LossConfig()), cfg, 10)
    step_a(batch(seed=1))
    b = copy.deepcopy(a)
    step_b = TrainStep(b, SelfDistillationLoss(LossConfig()), cfg, 10)
    step_b.load_state_dict(copy.deepcopy(step_a.state_dict()))  # as if read back from disk
    la, lb = step_a(batch(seed=2)), step_b(batch(seed=2))
    assert la.total.item() == pytest.approx(lb.total.item(), rel=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_runs_on_cpu_when_forced():
    model = quiet_model()
    step = TrainStep(model, SelfDistillationLoss(LossConfig()), OptimConfig(mixed_precision="bf16"), 5)
    loss = step(batch())
    assert loss.total.dtype == torch.float32 and torch.isfinite(loss.total)
