"""Backbones: Hugging Face speech encoders with a conv feature encoder and transformer blocks.

Supported families (all share the layout ``feature_extractor`` -> ``feature_projection``
-> ``encoder.layers[0..L-1]``): wav2vec 2.0, HuBERT, WavLM and data2vec-audio. A backbone
comes from a hub id, a local directory or an ``s3://`` prefix (``from_pretrained``), or is
randomly initialised from a named shape (``arch``) for tests, profiling and the demo.
A random-init backbone can swap its conv feature encoder for a log-mel front-end
(``frontend: logmel``, see ``emodistill.model.frontend``): far cheaper, and a better start
when training from scratch on a small corpus.

``layerdrop`` is always forced to 0: with layer drop a training step silently skips
blocks, so "the output of block k" would no longer be block k (see docs/method).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, model_validator
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from emodistill.config import Config
from emodistill.model.frontend import FRONTEND_TYPES, LOGMEL, LogMelFrontEnd

Family = Literal["wav2vec2", "hubert", "wavlm", "data2vec-audio"]
SUPPORTED_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")

# Named random-init shapes. `base` is transformers' own defaults (wav2vec2-base: 7 conv
# layers, 12 blocks of width 768). `tiny` keeps the real 320-sample frame stride (50
# frames/s) so clip lengths, masks and latencies scale like the real model, but is small
# enough to train in minutes on 2 CPU cores.
ARCHS: dict[str, dict[str, Any]] = {
    "base": {},
    "tiny": {
        "hidden_size": 64,  # width of every block; heads and features follow it
        "num_hidden_layers": 4,  # 4 blocks: enough exits to show a depth trade-off
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "conv_dim": (64, 64, 64, 64),
        "conv_kernel": (10, 8, 4, 4),
        "conv_stride": (5, 4, 4, 4),  # product 320 = wav2vec2's stride, 20 ms frames
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "mask_time_prob": 0.0,  # SpecAugment off by default at this size
    },
    # The CPU demo's shape: wider blocks than `tiny`, so that the blocks, not the front-end,
    # are what a deeper exit pays for (with `frontend: logmel`, exit_1 costs about a third
    # of the teacher). The conv_* values are tiny's, used with `frontend: conv`.
    "small": {
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 512,
        "conv_dim": (64, 64, 64, 64),
        "conv_kernel": (10, 8, 4, 4),
        "conv_stride": (5, 4, 4, 4),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "mask_time_prob": 0.0,
    },
}


class BackboneConfig(Config):
    """Where the speech encoder comes from and how it is fine-tuned."""

    pretrained: str | None = Field(
        None,
        description="Hub id (facebook/wav2vec2-base), local directory or s3:// prefix of a "
        "saved model loaded with from_pretrained. Exclusive with `arch`.",
    )
    arch: Literal["tiny", "small", "base"] | None = Field(
        None,
        description="Random-init named shape (no download): `tiny`, `small` (the CPU demo's, blocks dominate "
        "the cost) or `base` (wav2vec2-base).",
    )
    frontend: Literal["conv", "logmel", "logmel_pitch"] = Field(
        "conv",
        description="What turns samples into frames: `conv`, the family's conv feature encoder; `logmel`, a "
        "log-mel spectrogram + a small convolution; `logmel_pitch`, the same plus per-frame voicing, pitch and "
        "energy channels (random-init `arch` only; same 20 ms frames).",
    )
    family: Family = Field(
        "wav2vec2", description="Model family used with `arch` (wav2vec2, hubert, wavlm, data2vec-audio)."
    )
    freeze_feature_encoder: bool = Field(
        False, description="Freeze the conv feature encoder (the paper fine-tunes it; most recipes freeze it)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute block activations in backward to save memory."
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra backbone config values (e.g. hidden_dropout, mask_time_prob). "
        "layerdrop is always 0 and cannot be overridden.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "BackboneConfig":
        if (self.pretrained is None) == (self.arch is None):
            raise ValueError("backbone: set exactly one of `pretrained` (hub id or path) or `arch` (tiny|base)")
        if "layerdrop" in self.overrides and self.overrides["layerdrop"] not in (0, 0.0):
            raise ValueError("backbone.overrides.layerdrop must be 0: exits need every block to run")
        if self.frontend != "conv" and self.pretrained is not None:
            raise ValueError(
                f"backbone.frontend={self.frontend} replaces the conv feature encoder, whose output a pretrained "
                "backbone's blocks were trained on: use it with `arch` (random init) only"
            )
        return self


def arch_config(arch: str, family: str = "wav2vec2", frontend: str = "conv", **overrides: Any) -> PretrainedConfig:
    """A transformers config of the named shape for ``family`` (no weights, no download).

    ``frontend="logmel"`` sets the log-mel geometry in the conv_* fields and marks the
    config ``frontend: logmel`` (what ``attach_frontend`` reads)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    if family not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"unknown family {family!r}; choose one of {SUPPORTED_MODEL_TYPES}")
    if frontend not in FRONTEND_TYPES:
        raise ValueError(f"unknown frontend {frontend!r}; choose one of {FRONTEND_TYPES}")
    geometry = {**LOGMEL, "frontend": frontend} if frontend != "conv" else {}
    values = {**ARCHS[arch], **geometry, **overrides}
    if family == "data2vec-audio" and "num_conv_pos_embeddings" in values:
        # data2vec-audio's positional embedding is a stack of `num_conv_pos_embeddings`
        # small convs of width `conv_pos_kernel_size`, not one wide conv: keep its depth small.
        values["conv_pos_kernel_size"] = min(19, values.pop("num_conv_pos_embeddings") + 1)
        values["num_conv_pos_embeddings"] = 2
    config = AutoConfig.for_model(family, **values)
    config.layerdrop = 0.0
    return config


def load_backbone(cfg: BackboneConfig, s3: Any = None) -> PreTrainedModel:
    """Instantiate the encoder described by ``cfg`` (weights loaded when ``pretrained``;
    ``s3``: the run's S3Options for an ``s3://`` source)."""
    overrides = {**cfg.overrides, "layerdrop": 0.0}
    if cfg.pretrained is not None:
        source = localize(cfg.pretrained, s3)
        config = AutoConfig.from_pretrained(source)
        _check_supported(config)
        # Hub configs from before transformers 4.x (facebook/wav2vec2-base among them)
        # carry `gradient_checkpointing: true`, which from_pretrained would honour
        # silently; only BackboneConfig.gradient_checkpointing decides.
        if hasattr(config, "gradient_checkpointing"):
            delattr(config, "gradient_checkpointing")
        for key, value in overrides.items():
            setattr(config, key, value)
        model = AutoModel.from_pretrained(source, config=config)
    else:
        config = arch_config(cfg.arch, cfg.family, cfg.frontend, **overrides)
        model = attach_frontend(AutoModel.from_config(config))
    return prepare_backbone(model, cfg.freeze_feature_encoder, cfg.gradient_checkpointing)


def backbone_from_dict(config_dict: dict[str, Any]) -> PreTrainedModel:
    """Rebuild an (uninitialised) encoder from a saved ``config.to_dict()``."""
    values = dict(config_dict)
    model_type = values.pop("model_type")
    config = AutoConfig.for_model(model_type, **values)
    _check_supported(config)
    config.layerdrop = 0.0
    return attach_frontend(AutoModel.from_config(config))


def attach_frontend(model: PreTrainedModel) -> PreTrainedModel:
    """Replace the conv feature encoder by the front-end the config names (``frontend``;
    absent or ``conv``: keep the family's own)."""
    kind = getattr(model.config, "frontend", "conv")
    if kind == "conv":
        return model
    if kind not in FRONTEND_TYPES:
        raise ValueError(f"backbone config names an unknown frontend {kind!r}; choose one of {FRONTEND_TYPES}")
    c = model.config
    model.feature_extractor = LogMelFrontEnd(c.conv_dim, c.conv_kernel, c.conv_stride, pitch=kind == "logmel_pitch")
    return model


def prepare_backbone(model: PreTrainedModel, freeze_feature_encoder: bool, gradient_checkpointing: bool):
    _check_supported(model.config)
    if not hasattr(model, "feature_extractor") or not hasattr(getattr(model, "encoder", None), "layers"):
        raise TypeError(f"{type(model).__name__} has no conv feature encoder + transformer blocks")
    model.config.layerdrop = 0.0
    if freeze_feature_encoder:
        for param in model.feature_extractor.parameters():
            param.requires_grad = False
        model.feature_extractor._requires_grad = False
    if gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def _check_supported(config: PretrainedConfig) -> None:
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"backbone model_type {config.model_type!r} is not supported; "
            f"expected one of {SUPPORTED_MODEL_TYPES}"
        )


def localize(uri: str, s3: Any = None) -> str:
    """Return a local directory (or hub id) for ``uri``; ``s3://`` prefixes are downloaded
    once into a cache keyed by the URI (``EMODISTILL_CACHE``, default ~/.cache/emodistill),
    with ``s3`` (S3Options: endpoint, keys) or the AWS environment."""
    if not uri.startswith("s3://"):
        looks_local = uri.startswith(("/", "./", "../", "~")) or os.path.exists(uri)
        if looks_local and not os.path.isdir(os.path.expanduser(uri)):
            raise FileNotFoundError(f"no backbone directory at {uri}")
        return os.path.expanduser(uri) if looks_local else uri
    from emodistill.storage import cached_copy

    return cached_copy(uri, s3)
