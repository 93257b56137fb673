"""The training config: one YAML file (jobs/configs/*.yaml) plus key=value overrides.

    model:   ModelConfig     backbone, exits, heads
    loss:    LossConfig      weights, temperature, detach; `preset:` starts from a preset
    data:    DataConfig      dataset URI, train/validation folds or splits, batching
    augment: AugmentConfig   training-time augmentation (speed, noise, reverb, time masks)
    optim:   OptimConfig     optimiser, learning rates, schedule, accumulation, epochs
    scaling: ScalingConfig   Ray Train workers, GPUs
    run:     RunConfig       name, storage, checkpoints kept and by which metric, failures
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from emodistill.config import Config
from emodistill.data.augment import AugmentConfig
from emodistill.data.batching import BatchOptions
from emodistill.storage import S3Options
from emodistill.losses import LossConfig, preset
from emodistill.model import ModelConfig
from emodistill.model.heads import pooled_width


class DataConfig(Config):
    """Which dataset, which part trains and which validates."""

    dataset: str = Field(description="Dataset URI written by `emodistill ingest` (directory or s3://).")
    val_folds: list[int] | None = Field(
        None, description="Held-out speaker-independent folds (default: the last fold). Ignored with splits."
    )
    train_folds: list[int] | None = Field(None, description="Training folds (default: every fold not held out).")
    train_splits: list[str] | None = Field(None, description="Use the corpus' own splits instead of folds: training splits.")
    val_splits: list[str] | None = Field(None, description="Validation splits (with train_splits).")
    train_batch: BatchOptions = Field(
        default_factory=lambda: BatchOptions(mode="crop", max_seconds=6.0), description="How training clips are batched."
    )
    val_batch: BatchOptions = Field(
        default_factory=lambda: BatchOptions(mode="full"), description="How validation clips are batched."
    )
    s3: S3Options = Field(default_factory=S3Options, description="S3 settings for s3:// datasets.")

    @model_validator(mode="after")
    def _splits_together(self) -> DataConfig:
        if (self.train_splits is None) != (self.val_splits is None):
            raise ValueError("data: give both train_splits and val_splits, or neither (then folds are used)")
        return self


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
        "val/teacher/uar", description="Metric ranking checkpoints, e.g. val/teacher/uar, val/mean_uar, val/exit_2/uar."
    )
    max_failures: int = Field(2, ge=-1, description="Worker-group restarts allowed (-1: unlimited).")
    export_dir: str | None = Field(None, description="Also copy the best checkpoint here (local or s3://).")
    if_exists: Literal["error", "resume", "overwrite"] = Field(
        "error",
        description="When storage_path/name already holds a run: stop with an error (default), resume it "
        "from its latest checkpoint (what a resubmitted job wants), or delete it and start over. Ray Train "
        "would otherwise silently continue, or return, the earlier run.",
    )


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
