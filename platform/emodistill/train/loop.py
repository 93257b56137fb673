"""Self-distillation fine-tuning on Ray Train (the only module that calls Ray Train).

Driver side, :func:`fit`: reads dataset.json, builds the Ray Data datasets for the
training and held-out folds, and runs a ``TorchTrainer`` (DDP over ``num_workers``) with
checkpoints kept by a metric and ``FailureConfig(max_failures)``.

Worker side, :func:`train_loop_per_worker`: builds the model (same seed on every rank),
resumes from ``ray.train.get_checkpoint()`` when there is one, trains with
:class:`TrainStep`, validates every epoch on its shard of the held-out data, gathers
logits from all ranks, and reports per-exit metrics with a checkpoint directory in the
project's format (``model.safetensors`` + ``config.json``, plus ``train_state.pt`` for
the optimiser).
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emodistill.checkpoint import read_checkpoint_config, save_checkpoint
from emodistill.data.reader import Collate, read_dataset
from emodistill.data.schema import DatasetInfo, read_info
from emodistill.exits import sort_exits
from emodistill.storage import get_fs, join
from emodistill.evaluate.metrics import exit_metrics, summary
from emodistill.losses import SelfDistillationLoss
from emodistill.model import build_model
from emodistill.train.config import TrainConfig
from emodistill.train.step import TrainStep, autocast, unwrap

TRAIN_STATE_FILE = "train_state.pt"


# ---- which rows train and which validate ---------------------------------------------


@dataclass
class Selection:
    train_folds: list[int] | None
    val_folds: list[int] | None
    train_splits: list[str] | None
    val_splits: list[str] | None
    train_rows: int
    val_rows: int


def select(cfg: TrainConfig, info: DatasetInfo) -> Selection:
    """Resolve the training and validation folds (or splits) against the dataset."""
    d = cfg.data

    def rows(counts: dict[str, dict[str, int]], keys) -> int:
        return sum(sum(counts[str(k)].values()) for k in keys)

    if d.train_splits is not None:
        missing = sorted(set(d.train_splits + d.val_splits) - set(info.splits))
        if missing:
            raise ValueError(f"dataset has no splits {missing}; it has {info.splits or 'none'}")
        return Selection(
            None, None, d.train_splits, d.val_splits, rows(info.counts_by_split, d.train_splits),
            rows(info.counts_by_split, d.val_splits),
        )
    folds = info.folds
    val = d.val_folds if d.val_folds is not None else folds[-1:]
    train = d.train_folds if d.train_folds is not None else [f for f in folds if f not in val]
    unknown = sorted(set(val + train) - set(folds))
    if unknown:
        raise ValueError(f"dataset has no folds {unknown}; it has folds {folds}")
    if set(val) & set(train):
        raise ValueError(f"folds {sorted(set(val) & set(train))} are both trained on and held out")
    if not train or not val:
        raise ValueError(f"need training and held-out folds; got train={train}, val={val}")
    return Selection(train, val, None, None, rows(info.counts_by_fold, train), rows(info.counts_by_fold, val))


# ---- worker side ----------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def predict_batches(model, batches, device, mixed_precision: str = "no", loss_fn=None):
    """Run every exit over ``batches``: ({exit: (n, classes) float32 logits}, labels (n,), loss sums)."""
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


def _gather(obj):
    """All ranks' ``obj`` as a list (just ``[obj]`` without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def validation_metrics(parts, labels_names: list[str]) -> dict[str, float]:
    """Merge gathered (logits, labels, loss_sums, count) parts into flat metrics."""
    filled = [p for p in parts if len(p[1])]  # a rank may get no validation rows
    if not filled:
        raise ValueError("the held-out folds gave no validation clips")
    logits = {n: np.concatenate([p[0][n] for p in filled]) for n in filled[0][0]}
    labels = np.concatenate([p[1] for p in parts])
    count = sum(p[3] for p in parts)
    per_exit = exit_metrics(logits, labels, len(labels_names))
    metrics: dict[str, float] = {f"val/{k}": v for k, v in summary(per_exit).items()}
    for name, m in per_exit.items():
        for key in ("uar", "wa", "macro_f1"):
            metrics[f"val/{name}/{key}"] = m[key]
    for key in filled[0][2]:
        metrics[f"val/loss/{key}"] = sum(p[2].get(key, 0.0) for p in parts) / max(1, count)
    metrics["val/rows"] = float(count)
    return metrics


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
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(config["train"])
    labels: list[str] = config["labels"]
    _quiet_report_log()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.scaling.torch_threads or max(1, int(cfg.scaling.cpus_per_worker)))
    _seed_everything(cfg.seed)  # identical initial weights on every rank

    model = build_model(cfg.model, labels)
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
            from safetensors.torch import load_file

            state = load_file(os.path.join(directory, "model.safetensors"))
            unwrap(model).load_state_dict(state)
            train_state = torch.load(os.path.join(directory, TRAIN_STATE_FILE), weights_only=True)
            step.load_state_dict(train_state["step"])
            start_epoch = int(train_state["epoch"]) + 1
            history = read_checkpoint_config(directory).metadata.get("history", [])
            resumed_from = int(train_state["epoch"])
            torch.set_rng_state(train_state["torch_rng"])

    device = step.device
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    val_loss = SelfDistillationLoss(cfg.loss)
    for epoch in range(start_epoch, cfg.optim.epochs):
        _seed_everything(cfg.seed * 1000 + epoch * 10 + rank)
        model.train()
        started = time.perf_counter()
        train_sums: dict[str, float] = {}
        seen = 0
        for batch in train_shard.iter_torch_batches(
            batch_size=cfg.optim.batch_size, collate_fn=Collate(), local_shuffle_buffer_size=4 * cfg.optim.batch_size,
            local_shuffle_seed=cfg.seed + epoch,
        ):
            loss = step(batch)
            n = len(batch["labels"])
            seen += n
            for key, value in loss.log_dict("").items():
                train_sums[key] = train_sums.get(key, 0.0) + value * n
        train_seconds = time.perf_counter() - started

        val_batches = val_shard.iter_torch_batches(batch_size=cfg.optim.batch_size, collate_fn=Collate())
        local = predict_batches(model, val_batches, device, cfg.optim.mixed_precision, val_loss)
        parts = _gather(local)
        train_parts = _gather((train_sums, seen, train_seconds))
        metrics = validation_metrics(parts, labels)
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
            from emodistill.tune.objectives import objectives

            metrics.update(objectives(metrics, config["objectives"]["latency_ms"], config["objectives"]["budget_ms"]))
        history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                save_checkpoint(
                    unwrap(model),
                    tmp,
                    preprocessing={"train_batch": cfg.data.train_batch.model_dump(), "val_batch": cfg.data.val_batch.model_dump()},
                    metadata={
                        "train_config": cfg.model_dump(mode="json"),
                        "epoch": epoch,
                        "metrics": metrics,
                        "dataset": cfg.data.dataset,
                        "train_folds": config["selection"]["train_folds"],
                        "val_folds": config["selection"]["val_folds"],
                        "train_splits": config["selection"]["train_splits"],
                        "val_splits": config["selection"]["val_splits"],
                        "history": history,
                    },
                )
                torch.save(
                    {"epoch": epoch, "step": step.state_dict(), "torch_rng": torch.get_rng_state()},
                    os.path.join(tmp, TRAIN_STATE_FILE),
                )
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


# ---- driver side ----------------------------------------------------------------------


@dataclass
class TrainResult:
    best_checkpoint: str  # directory in the project's checkpoint format
    best_metrics: dict
    history: list[dict]
    run_dir: str


def _progress_callback(epochs: int):
    """A controller-side callback printing one line per epoch (shown in the driver's log)."""
    import ray.train

    class EpochProgress(ray.train.UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            m = metrics[0]
            exits = sort_exits(k.split("/")[1] for k in m if k.startswith("val/exit_"))
            uars = " ".join(f"{n}={m[f'val/{n}/uar']:.3f}" for n in exits)
            resumed = f" (resumed after epoch {m['resumed_from_epoch']})" if m.get("resumed_from_epoch", -1) >= 0 else ""
            print(
                f"epoch {m['epoch'] + 1}/{epochs}: train loss {m['train/loss/total']:.3f}, "
                f"{m['train/clips_per_second']:.1f} clips/s; val UAR {uars}{resumed}",
                flush=True,
            )

    return EpochProgress()


def prepare_run_dir(cfg: TrainConfig, storage: str) -> None:
    """Apply ``run.if_exists`` to an earlier run at ``storage/name`` (Ray Train would resume it)."""
    fs, root = get_fs(join(storage, cfg.run.name), cfg.data.s3)
    if not fs.exists(root) or cfg.run.if_exists == "resume":
        return
    if cfg.run.if_exists == "overwrite":
        fs.rm(root, recursive=True)
        return
    raise FileExistsError(
        f"{join(storage, cfg.run.name)} already holds a run named {cfg.run.name!r}. Set run.if_exists=resume to "
        "continue it from its latest checkpoint, run.if_exists=overwrite to start over, or choose another run.name."
    )


def build_trainer(cfg: TrainConfig, progress: bool = True, callbacks: list | None = None, objectives: dict | None = None):
    """The Ray Train ``TorchTrainer`` of ``cfg`` (what ``fit`` runs and every sweep trial runs).

    ``objectives`` ({"latency_ms": {exit: ms}, "budget_ms": x}) makes every report carry the
    sweep objectives; ``callbacks`` are extra Ray Train callbacks (Tune's report callback).
    """
    import ray
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    info = read_info(cfg.data.dataset, cfg.data.s3)
    sel = select(cfg, info)
    storage = cfg.run.storage_path if "://" in cfg.run.storage_path else str(Path(cfg.run.storage_path).absolute())
    prepare_run_dir(cfg, storage)
    if not ray.is_initialized():
        ray.init()
    data_context = ray.data.DataContext.get_current()
    data_context.enable_progress_bars = False
    data_context.print_on_execution_start = False
    train_ds = read_dataset(
        cfg.data.dataset, folds=sel.train_folds, splits=sel.train_splits, options=cfg.data.train_batch, s3=cfg.data.s3
    ).randomize_block_order(seed=cfg.seed)
    val_ds = read_dataset(
        cfg.data.dataset, folds=sel.val_folds, splits=sel.val_splits, options=cfg.data.val_batch, s3=cfg.data.s3
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": cfg.model_dump(mode="json"),
            "labels": info.labels,
            "train_rows": sel.train_rows,
            "selection": {
                "train_folds": sel.train_folds,
                "val_folds": sel.val_folds,
                "train_splits": sel.train_splits,
                "val_splits": sel.val_splits,
            },
            "objectives": objectives,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker, **({"GPU": 1} if cfg.scaling.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=cfg.run.name,
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.run.keep_checkpoints,
                checkpoint_score_attribute=cfg.run.checkpoint_metric,
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
            callbacks=([_progress_callback(cfg.optim.epochs)] if progress else []) + list(callbacks or []),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # our per-epoch line instead
        ),
        datasets={"train": train_ds, "val": val_ds},
    )


def fit(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Run the Ray Train job described by ``cfg`` on the current Ray cluster."""
    trainer = build_trainer(cfg, progress)
    result = trainer.fit()
    if result.error:
        raise result.error
    best_ckpt, best_metrics = max(
        result.best_checkpoints, key=lambda cm: cm[1].get(cfg.run.checkpoint_metric, float("-inf"))
    )
    with result.checkpoint.as_directory() as latest:  # the latest checkpoint carries the whole history
        history = read_checkpoint_config(latest).metadata.get("history", [])
    best_path = best_ckpt.path
    if cfg.run.export_dir:
        best_path = export_checkpoint(best_ckpt, cfg.run.export_dir)
    return TrainResult(best_checkpoint=best_path, best_metrics=dict(best_metrics), history=history, run_dir=result.path)


def export_checkpoint(checkpoint, dest: str) -> str:
    """Copy a Ray checkpoint to ``dest`` as a clean project checkpoint (no optimiser state)."""
    from emodistill.checkpoint import load_checkpoint

    with checkpoint.as_directory() as directory:
        loaded = load_checkpoint(directory)
        return save_checkpoint(
            loaded.model,
            dest,
            sample_rate=loaded.config.sample_rate,
            preprocessing=loaded.config.preprocessing,
            metadata=loaded.config.metadata,
        )
