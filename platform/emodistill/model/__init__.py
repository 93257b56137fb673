"""Early-exit speech emotion models (pure torch + transformers, no Ray)."""

from emodistill.model.backbone import ARCHS, BackboneConfig, arch_config, load_backbone
from emodistill.model.early_exit import (
    EarlyExitModel,
    EarlyExitOutput,
    ExitModelSpec,
    ExitOutput,
    ModelConfig,
    build_model,
    count_parameters,
    exit_block,
    exit_name,
)
from emodistill.model.heads import HEAD_TYPES, ExitHead, HeadType, masked_mean

__all__ = [
    "ARCHS",
    "BackboneConfig",
    "EarlyExitModel",
    "EarlyExitOutput",
    "ExitHead",
    "ExitModelSpec",
    "ExitOutput",
    "HEAD_TYPES",
    "HeadType",
    "ModelConfig",
    "arch_config",
    "build_model",
    "count_parameters",
    "exit_block",
    "exit_name",
    "load_backbone",
    "masked_mean",
]
