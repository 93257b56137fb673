"""The training config: one YAML file (jobs/configs/*.yaml) plus key=value overrides.

    model:   ModelConfig     backbone, exits, heads
    loss:    LossConfig      weights, temperature, detach; `preset:` starts from a preset
    data:    DataConfig      dataset URI, train / val (selection) / test folds or splits, batching
    augment: AugmentConfig   training-time augmentation (speed, noise, reverb, time masks)
    optim:   OptimConfig     optimiser, learning rates, schedule, accumulation, epochs
    scaling: ScalingConfig   Ray Train workers, GPUs
    run:     RunConfig       name, storage, checkpoints kept and by which metric, failures
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from emodistill.config import Config
from emodistill.data.augment import AugmentConfig
from emodistill.data.batching import BatchOptions
from emodistill.evaluate.metrics import metric_mode
from emodistill.exits import exit_name
from emodistill.storage import S3Options
from emodistill.losses import LossConfig, preset
from emodistill.model import ModelConfig, arch_config
from emodistill.model.heads import pooled_width


def arch_depth(model: ModelConfig) -> int | None:
    """Blocks of a random-init ``arch`` backbone (None for a pretrained one: its config
    is read by the preflight checks, :mod:`emodistill.train.preflight`)."""
    bb = model.backbone
    if bb.arch is None:
        return None
    return int(arch_config(bb.arch, bb.family, **bb.overrides).num_hidden_layers)


class DataConfig(Config):
    """Which dataset, and which speakers train, select the checkpoint and test (data/folds.py)."""

    dataset: str = Field(description="Dataset URI written by `emodistill ingest` (directory or s3://).")
    val_folds: list[int] | None = Field(
        None,
        description="Folds whose speakers select the checkpoint (default: none; val_fraction of the training "
        "folds' speakers are carved out instead). Never the test folds.",
    )
    train_folds: list[int] | None = Field(None, description="Training folds (default: every fold not val or test).")
    train_splits: list[str] | None = Field(None, description="Use the corpus' own splits instead of folds: training splits.")
    val_splits: list[str] | None = Field(None, description="Selection splits (with train_splits), e.g. [dev].")
    train_batch: BatchOptions = Field(
        default_factory=lambda: BatchOptions(mode="crop", max_seconds=6.0), description="How training clips are batched."
    )
    val_batch: BatchOptions = Field(
        default_factory=lambda: BatchOptions(mode="full"),
        description="How held-out clips are prepared (validation, and evaluation of the checkpoint).",
    )
    s3: S3Options = Field(
        default_factory=S3Options, description="S3 settings for every s3:// URI of the run (dataset, backbone, checkpoints)."
    )
    test_folds: list[int] | None = Field(
        None, description="Folds evaluated only, never used for selection (default: the last fold; [] for none)."
    )
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Without val_folds: share of the training folds' speakers (at least 1) that select."
    )
    test_splits: list[str] | None = Field(None, description="Splits evaluated only (with train_splits), e.g. [test].")
    shuffle: Literal["global", "blocks"] = Field(
        "global",
        description="Training order, new every epoch (seeded): global = any row anywhere; blocks = block order only "
        "(for corpora too large to shuffle) plus a local buffer.",
    )

    @model_validator(mode="after")
    def _splits_together(self) -> DataConfig:
        if (self.train_splits is None) != (self.val_splits is None):
            raise ValueError("data: give both train_splits and val_splits, or neither (then folds are used)")
        if self.test_splits is not None and self.train_splits is None:
            raise ValueError("data: test_splits needs train_splits and val_splits (the corpus' own protocol)")
        return self

    def selection_args(self) -> dict[str, Any]:
        """Keyword arguments of :func:`emodistill.data.folds.select` (plus the run's seed)."""
        keys = ("train_folds", "val_folds", "test_folds", "val_fraction", "train_splits", "val_splits", "test_splits")
        return {k: getattr(self, k) for k in keys}


class OptimConfig(Config):
    """Optimiser and schedule."""

    optimizer: Literal["adamw", "adam"] = Field("adamw", description="adamw (decoupled decay) or adam (the paper).")
    lr_backbone: float = Field(5e-5, gt=0, description="Peak learning rate of the backbone.")
    lr_heads: float = Field(1e-3, gt=0, description="Peak learning rate of the exit heads (fresh weights learn faster).")
    weight_decay: float = Field(0.01, ge=0, description="Weight decay (not applied to biases and norms).")
    schedule: Literal["linear", "cosine", "constant"] = Field("linear", description="Decay after warm-up.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of optimiser steps spent warming up linearly.")
    epochs: int = Field(10, ge=1, description="Passes over the training data.")
    batch_size: int = Field(8, ge=1, description="Clips per worker per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Forward passes per optimiser step.")
    max_grad_norm: float | None = Field(1.0, description="Gradient clipping norm (None: no clipping).")
    mixed_precision: Literal["auto", "bf16", "no"] = Field(
        "auto", description="bf16 autocast: auto = on CUDA only, bf16 = always, no = never."
    )


class ScalingConfig(Config):
    """How many Ray Train workers and what each gets."""

    num_workers: int = Field(1, ge=1, description="Data-parallel workers (DDP).")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved for each worker.")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per worker (default: CPUs per worker).")


class RunConfig(Config):
    """Where results go and how failures and checkpoints are handled."""

    name: str = Field("emodistill", description="Run name (a folder under storage_path).")
    storage_path: str = Field("runs/ray", description="Ray Train storage: local directory or s3:// prefix.")
    keep_checkpoints: int = Field(2, ge=1, description="Best checkpoints to keep.")
    checkpoint_metric: str = Field(
        "val/teacher_uar",
        description="Metric of the selection speakers ranking checkpoints, e.g. val/teacher_uar, val/mean_exit_uar, "
        "val/exit_2/uar, val/loss/total (losses rank lowest first).",
    )
    max_failures: int = Field(2, ge=-1, description="Worker-group restarts allowed (-1: unlimited).")
    export_dir: str | None = Field(None, description="Also copy the best checkpoint here (local or s3://).")
    if_exists: Literal["error", "resume", "overwrite"] = Field(
        "error",
        description="When storage_path/name already holds a run: stop with an error (default), resume it "
        "from its latest checkpoint (what a resubmitted job wants), or delete it and start over. Ray Train "
        "would otherwise silently continue, or return, the earlier run.",
    )

    @field_validator("checkpoint_metric")
    @classmethod
    def _reported(cls, name: str) -> str:
        metric_mode(name)  # a name no run reports fails here, not after the whole run
        return name


class TrainConfig(Config):
    """Everything `emodistill train` needs."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="Backbone and exits.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Self-distillation loss (`preset:` allowed).")
    data: DataConfig = Field(description="Dataset and folds.")
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig, description="Training-time augmentation of each clip (all off by default)."
    )
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimiser and schedule.")
    scaling: ScalingConfig = Field(default_factory=ScalingConfig, description="Ray Train workers.")
    run: RunConfig = Field(default_factory=RunConfig, description="Storage, checkpoints, failures.")
    seed: int = Field(0, description="Seed of model init, data order and crops.")

    @model_validator(mode="after")
    def _metric_of_an_exit(self) -> TrainConfig:
        """An exit named in checkpoint_metric must be one the model has (when its depth is known here)."""
        depth = arch_depth(self.model)
        if depth is not None:
            try:
                metric_mode(self.run.checkpoint_metric, self.exit_names(depth))
            except ValueError as err:
                raise ValueError(f"run.checkpoint_metric: {err}") from None
        return self

    def exit_names(self, depth: int) -> list[str]:
        """The model's exits on a backbone of ``depth`` blocks (the deepest is the teacher)."""
        return [exit_name(b) for b in sorted({*self.model.exits, depth}) if b <= depth]

    @model_validator(mode="before")
    @classmethod
    def _loss_preset(cls, raw: Any) -> Any:
        """`loss: {preset: paper, kd_weight: 0.5}` = the preset with those fields changed."""
        if isinstance(raw, dict) and isinstance(raw.get("loss"), dict) and "preset" in raw["loss"]:
            loss = dict(raw["loss"])
            base = preset(loss.pop("preset")).model_dump()
            raw = {**raw, "loss": {**base, **loss}}
        return raw

    @model_validator(mode="after")
    def _vtlp_needs_logmel(self) -> TrainConfig:
        """VTLP warps the mel filterbank: the conv feature encoder has none to warp."""
        if self.augment.vtlp != (1.0, 1.0) and self.model.backbone.frontend == "conv":
            raise ValueError(
                "augment.vtlp warps the log-mel front-end's filterbank, but model.backbone.frontend is conv: set "
                "frontend: logmel (or logmel_pitch), or leave augment.vtlp at [1.0, 1.0]"
            )
        return self

    @model_validator(mode="after")
    def _feature_widths(self) -> TrainConfig:
        """Embedding-level feature distillation compares pooled features of the students and
        the teacher: statistics-pooling heads give twice the width of the others."""
        m, loss = self.model, self.loss
        if m.exits and loss.feature_weight > 0 and loss.feature_level == "embedding":
            if pooled_width(m.student_head, 1) != pooled_width(m.teacher_head, 1):
                raise ValueError(
                    f"loss.feature_level=embedding compares pooled features, but student_head={m.student_head} and "
                    f"teacher_head={m.teacher_head} pool to different widths: use the same kind of pooling on every "
                    "exit, or loss.feature_level=linear"
                )
        return self
