"""Losses, kept apart from the models: a distillation variant is a config change."""

from emodistill.losses.self_distillation import (
    PRESETS,
    LossConfig,
    LossOutput,
    SelfDistillationLoss,
    kd_kl,
    preset,
)

__all__ = ["PRESETS", "LossConfig", "LossOutput", "SelfDistillationLoss", "kd_kl", "preset"]
