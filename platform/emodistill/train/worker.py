"""The Ray Train worker: what every rank runs (`train_loop_per_worker`).

    build the model (same seed on every rank) -> resume from ray.train.get_checkpoint()
    per epoch:
        train   TrainStep over this rank's shard of the training rows (a new global
                order each epoch, crops seeded by (seed, epoch, clip))
        select  every exit on this rank's share of the val rows (each row once overall)
        gather  logits and loss sums from all ranks -> val/... metrics (evaluate.metrics)
        report  metrics + a checkpoint in the project's format (rank 0 writes it)

The driver (:mod:`emodistill.train.driver`) builds the datasets and the trainer; the
checkpoint contents (weights, TrainingMetadata, train state) are written and read only
through :mod:`emodistill.checkpoint`.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time

import numpy as np
import torch

from emodistill.checkpoint import (
    Preprocessing,
    TrainingMetadata,
    TrainState,
    load_train_state,
    load_weights,
    read_checkpoint_config,
    save_checkpoint,
    save_train_state,
)
from emodistill.console import StepReporter
from emodistill.data.folds import Selection
from emodistill.data.reader import Collate
from emodistill.evaluate.metrics import merge_validation
from emodistill.losses import SelfDistillationLoss
from emodistill.model import build_model
from emodistill.train.config import TrainConfig
from emodistill.train.step import TrainStep, autocast, unwrap

LOCAL_SHUFFLE_ROWS = 256  # with data.shuffle=blocks: a buffer over the block order


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def predict_batches(model, batches, device, mixed_precision: str = "no", loss_fn=None):
    """Run every exit over ``batches``: ({exit: (n, classes) float32 logits}, labels (n,),
    loss sums, clip count). ``model`` is the plain module (never a DDP wrapper: ranks may
    see different numbers of batches here, and DDP's forward would wait on the others)."""
    model.eval()
    logits: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    loss_sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        x = batch["input_values"].to(device)
        mask = batch["attention_mask"].to(device)
        y = batch["labels"].to(device)
        with autocast(device, mixed_precision):
            out = model(x, mask)
        for name, ex in out.exits.items():
            logits.setdefault(name, []).append(ex.logits.float().cpu().numpy())
        labels.append(y.cpu().numpy())
        if loss_fn is not None:
            for key, value in loss_fn(out, y).log_dict("").items():
                loss_sums[key] = loss_sums.get(key, 0.0) + value * len(y)
        count += len(y)
    merged = {n: np.concatenate(v) for n, v in logits.items()}
    return merged, (np.concatenate(labels) if labels else np.zeros(0, np.int64)), loss_sums, count


def gather(obj):
    """All ranks' ``obj`` as a list (just ``[obj]`` without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _quiet_report_log() -> None:
    """Ray Train 2.60 logs every ``ray.train.report`` with all its metrics at INFO from a
    logger named by file path, which ``LoggingConfig(log_level)`` does not filter; the
    controller's one line per epoch says what matters."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # a Ray without that module: nothing to quiet
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict) -> None:
    """``config``: {"train": TrainConfig JSON, "labels", "train_rows", "selection": Selection
    JSON, "objectives": None or {"latency_ms", "budget_ms"} (a sweep)}."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(config["train"])
    labels: list[str] = config["labels"]
    selection = Selection.model_validate(config["selection"])
    _quiet_report_log()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.scaling.torch_threads or max(1, int(cfg.scaling.cpus_per_worker)))
    seed_everything(cfg.seed)  # identical initial weights on every rank

    model = build_model(cfg.model, labels, s3=cfg.data.s3)
    steps_per_epoch = math.ceil(config["train_rows"] / (world * cfg.optim.batch_size * cfg.optim.grad_accum))
    model = ray.train.torch.prepare_model(model)
    step = TrainStep(
        model, SelfDistillationLoss(cfg.loss), cfg.optim, steps_per_epoch * cfg.optim.epochs, augment=cfg.augment
    )

    start_epoch, resumed_from = 0, -1
    history: list[dict] = []  # per-epoch metrics, carried in every checkpoint
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            load_weights(unwrap(model), directory)
            state = load_train_state(directory)
            step.load_state_dict(state.step)
            torch.set_rng_state(state.torch_rng)
            history = read_checkpoint_config(directory).training.history
            start_epoch, resumed_from = state.epoch + 1, state.epoch

    device = step.device
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    val_loss = SelfDistillationLoss(cfg.loss)
    local_buffer = LOCAL_SHUFFLE_ROWS if cfg.data.shuffle == "blocks" else None
    board = config.get("progress") if rank == 0 else None  # the driver draws rank 0's progress
    rank_steps = math.ceil(config["train_rows"] / (world * cfg.optim.batch_size))
    for epoch in range(start_epoch, cfg.optim.epochs):
        seed_everything(cfg.seed * 1000 + epoch * 10 + rank)  # dropout, SpecAugment: new per epoch and rank
        model.train()
        started = time.perf_counter()
        train_sums: dict[str, float] = {}
        seen = 0
        progress = StepReporter(board, epoch, rank_steps)
        for batch in train_shard.iter_torch_batches(
            batch_size=cfg.optim.batch_size,
            collate_fn=Collate(cfg.data.train_batch, cfg.seed, epoch),
            local_shuffle_buffer_size=local_buffer,
            local_shuffle_seed=(cfg.seed * 1000 + epoch) if local_buffer else None,
        ):
            loss = step(batch)
            n = len(batch["labels"])
            seen += n
            logged = loss.log_dict("")
            for key, value in logged.items():
                train_sums[key] = train_sums.get(key, 0.0) + value * n
            progress.update(n, logged.get("total", float("nan")))
        train_seconds = time.perf_counter() - started

        val_batches = val_shard.iter_torch_batches(batch_size=cfg.optim.batch_size, collate_fn=Collate())
        local = predict_batches(unwrap(model), val_batches, device, cfg.optim.mixed_precision, val_loss)
        metrics = merge_validation(gather(local), len(labels))
        train_parts = gather((train_sums, seen, train_seconds))
        total_seen = sum(p[1] for p in train_parts)
        for key in train_parts[0][0]:
            metrics[f"train/loss/{key}"] = sum(p[0].get(key, 0.0) for p in train_parts) / max(1, total_seen)
        metrics.update(
            {
                "epoch": epoch,
                "resumed_from_epoch": resumed_from,
                "train/clips": float(total_seen),
                "train/clips_per_second": total_seen / max(1e-9, max(p[2] for p in train_parts)),
                "train/lr_backbone": step.optimizer.param_groups[0]["lr"],
                "optimizer_steps": step.optimizer_steps,
            }
        )
        if config.get("objectives"):  # a sweep: the four objectives as plain columns
            from emodistill.evaluate.objectives import objectives

            metrics.update(objectives(metrics, config["objectives"]["latency_ms"], config["objectives"]["budget_ms"]))
        history.append(metrics)
        progress.epoch_done(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                save_checkpoint(
                    unwrap(model),
                    tmp,
                    preprocessing=Preprocessing(train_batch=cfg.data.train_batch, val_batch=cfg.data.val_batch),
                    metadata=TrainingMetadata(
                        train_config=cfg.model_dump(mode="json"),
                        dataset=cfg.data.dataset,
                        selection=selection,
                        epoch=epoch,
                        metrics=metrics,
                        history=history,
                    ),
                )
                save_train_state(tmp, TrainState(epoch=epoch, step=step.state_dict(), torch_rng=torch.get_rng_state()))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
