"""The training step without Ray: optimiser, schedule, autocast, accumulation, clipping.

`TrainStep` is all a training loop needs per batch; the Ray Train loop wraps it, and
the GPU benchmark calls it directly on a machine that has no Ray. With an ``augment``
config it augments every training batch first (``emodistill.data.augment``), seeded from
torch's generator, which the loop seeds per epoch and rank: a run augments the same way
every time.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import nn

from emodistill.data.augment import AugmentConfig, apply_vtlp, augment_batch
from emodistill.losses import LossOutput, SelfDistillationLoss
from emodistill.train.config import OptimConfig


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Backbone and heads get their own learning rates; biases and norms get no decay."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in unwrap(model).named_parameters():
        if not param.requires_grad:
            continue
        part = "heads" if name.startswith("heads.") else "backbone"
        decay = param.ndim >= 2 and "norm" not in name.lower()
        groups.setdefault((part, decay), []).append(param)
    lrs = {"backbone": cfg.lr_backbone, "heads": cfg.lr_heads}
    return [
        {"params": params, "lr": lrs[part], "weight_decay": cfg.weight_decay if decay else 0.0, "name": f"{part}"}
        for (part, decay), params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "adam":  # the paper: plain Adam, decay as L2 (0 by default there)
        return torch.optim.Adam(groups)
    return torch.optim.AdamW(groups)


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    warmup = int(cfg.warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    progress = min(1.0, progress)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def autocast(device: torch.device, mode: str):
    """bf16 autocast per ``mode`` (auto: CUDA only); a no-op context otherwise."""
    use = mode == "bf16" or (mode == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class TrainStep:
    """One call = one forward/backward on a batch; every ``grad_accum`` calls, an optimiser step."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: SelfDistillationLoss,
        cfg: OptimConfig,
        total_steps: int,
        augment: AugmentConfig | None = None,
    ):
        self.model = model
        self.loss_fn = loss_fn
        self.cfg = cfg
        self.augment = augment if augment is not None and augment.active else None
        if augment is not None:
            apply_vtlp(model, augment)  # the front-end's own, in train() mode only
        self.total_steps = max(1, total_steps)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps, cfg)
        )
        self.micro_step = 0
        self.optimizer_steps = 0

    @property
    def device(self) -> torch.device:
        return next(unwrap(self.model).parameters()).device

    def __call__(self, batch: dict[str, torch.Tensor]) -> LossOutput:
        device = self.device
        x, mask = batch["input_values"], batch["attention_mask"]
        if self.augment is not None:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))  # from torch's seeded stream
            x, mask = augment_batch(x, mask, self.augment, rng)
        x = x.to(device, non_blocking=True)
        mask = mask.to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        last_micro = (self.micro_step + 1) % self.cfg.grad_accum == 0
        sync = contextlib.nullcontext() if last_micro or not hasattr(self.model, "no_sync") else self.model.no_sync()
        with sync:
            with autocast(device, self.cfg.mixed_precision):
                outputs = self.model(x, mask)
            loss = self.loss_fn(_float32(outputs), labels)
            (loss.total / self.cfg.grad_accum).backward()
        self.micro_step += 1
        if last_micro:
            if self.cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.optimizer_steps += 1
        return loss

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "micro_step": self.micro_step,
            "optimizer_steps": self.optimizer_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_step = int(state["micro_step"])
        self.optimizer_steps = int(state["optimizer_steps"])


def _float32(outputs):
    """Losses in float32 even when the forward ran in bf16."""
    for out in outputs.exits.values():
        out.logits = out.logits.float()
        out.embedding = out.embedding.float()
        out.linear = out.linear.float()
    return outputs
