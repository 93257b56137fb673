"""The driver of a training run (the only module that builds a Ray Train trainer).

:func:`fit`: preflight checks (no Ray), the Ray Data datasets of the train and val parts
(the test part is never read here), a ``TorchTrainer`` running
:func:`emodistill.train.worker.train_loop_per_worker` over ``num_workers`` DDP ranks,
checkpoints kept and ranked by ``run.checkpoint_metric`` in the direction that metric
improves, ``FailureConfig(max_failures)``; then the best and the last checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emodistill.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from emodistill.data.reader import read_dataset, training_dataset
from emodistill.evaluate.metrics import Mode, exits_in, metric_key
from emodistill.storage import get_fs, join
from emodistill.train.config import TrainConfig
from emodistill.train.preflight import Plan, check_run_dir, preflight
from emodistill.train.worker import train_loop_per_worker


@dataclass
class TrainResult:
    best_checkpoint: str  # directory in the project's checkpoint format
    best_metrics: dict
    history: list[dict]
    run_dir: str
    last_checkpoint: Any = None  # ray.train.Checkpoint of the final epoch (Ray always keeps the latest)
    best_ray_checkpoint: Any = None  # ray.train.Checkpoint of the selected epoch (in the run's storage)
    plan: Plan | None = None
    tracking: Any = None  # emodistill.tracking.TrainTracking of the MLflow run, when tracked


def prepare_run_dir(cfg: TrainConfig, storage: str) -> None:
    """Apply ``run.if_exists`` to an earlier run at ``storage/name`` (Ray Train would resume it)."""
    if cfg.run.if_exists == "overwrite":
        fs, root = get_fs(join(storage, cfg.run.name), cfg.data.s3)
        if fs.exists(root):
            fs.rm(root, recursive=True)
        return
    check_run_dir(cfg, storage)  # error: refuse to take the earlier run silently; resume: nothing to do


def data_config(world_size_hint: int | None = None):
    """Ray Train's DataConfig, except that the ``val`` rows are split unevenly: with
    ``equal=True`` (Ray's default) up to ``world_size - 1`` validation rows would be
    dropped every epoch, so selection would score a slightly different set than it says.
    Training keeps equal shards (DDP ranks must take the same number of steps)."""
    import ray.train

    class UnevenValidation(ray.train.DataConfig):
        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            even = {k: v for k, v in datasets.items() if k != "val"}
            output = super().configure(even, world_size, worker_handles, worker_node_ids, **kwargs)
            if "val" in datasets:
                ds = datasets["val"]
                if ds.name is None:
                    ds.set_name("val")
                ds = ds.copy(ds)
                ds.context.execution_options = self._resolve_execution_options("val")
                hints = worker_node_ids if self._enable_shard_locality else None
                for i, split in enumerate(ds.streaming_split(world_size, equal=False, locality_hints=hints)):
                    output[i]["val"] = split
            return output

    return UnevenValidation()


def build_trainer(
    cfg: TrainConfig, progress: bool = True, callbacks: list | None = None, objectives: dict | None = None,
    plan: Plan | None = None, score: str | None = None, board: Any = None,
):
    """The Ray Train ``TorchTrainer`` of ``cfg`` (what ``fit`` runs and every sweep trial runs).

    ``objectives`` ({"latency_ms": {exit: ms}, "budget_ms": x}) makes every report carry the
    sweep objectives; ``score`` ranks checkpoints by one of them instead of
    ``run.checkpoint_metric`` (a sweep); ``callbacks`` are extra Ray Train callbacks (Tune's
    report callback); ``board`` is the actor handle of a :class:`emodistill.console.ProgressBoard`
    that rank 0 posts its progress to (``fit`` makes one when ``progress``).
    """
    import ray
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from emodistill.evaluate.objectives import OBJECTIVES

    cfg = with_absolute_local_paths(cfg)
    plan = plan or preflight(cfg, check_storage=False)
    sel = plan.selection
    storage = cfg.run.storage_path if "://" in cfg.run.storage_path else str(Path(cfg.run.storage_path).absolute())
    prepare_run_dir(cfg, storage)
    metric, order = cfg.run.checkpoint_metric, plan.metric_mode
    if score is not None and score != metric:
        if not (objectives and score in OBJECTIVES):
            raise ValueError(f"score {score!r}: only a sweep's objectives ({', '.join(OBJECTIVES)}) can rank instead")
        metric, order = score, "max"
    if not ray.is_initialized():
        ray.init()
    data_context = ray.data.DataContext.get_current()
    data_context.enable_progress_bars = False
    data_context.print_on_execution_start = False
    train_ds = training_dataset(
        cfg.data.dataset, sel.train, cfg.data.train_batch, seed=cfg.seed, shuffle=cfg.data.shuffle, s3=cfg.data.s3
    )
    val_ds = read_dataset(cfg.data.dataset, part=sel.val, options=cfg.data.val_batch, s3=cfg.data.s3, seed=cfg.seed)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": cfg.model_dump(mode="json"),
            "labels": plan.info.labels,
            "train_rows": plan.train_rows,
            "selection": sel.model_dump(mode="json"),
            "objectives": objectives,
            "progress": board,
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
                checkpoint_score_attribute=metric,
                checkpoint_score_order=order,
            ),
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
            callbacks=list(callbacks or []),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # our per-epoch line instead
        ),
        datasets={"train": train_ds, "val": val_ds},
        dataset_config=data_config(),
    )


def best_of(checkpoints: Sequence[tuple], metric: str, mode: Mode):
    """The best (checkpoint, metrics) by ``metric`` in direction ``mode``; ties go to the
    later epoch, as Ray's checkpoint manager keeps the later of tied checkpoints."""
    sign = 1.0 if mode == "max" else -1.0

    def key(item):
        value = item[1].get(metric)
        score = float("-inf") if value is None else sign * float(value)
        return score, float(item[1].get("epoch", -1))

    if not checkpoints:
        raise ValueError("the run kept no checkpoints")
    best = max(checkpoints, key=key)
    if best[1].get(metric) is None:
        raise ValueError(f"no checkpoint reported {metric!r}; reported: {sorted(best[1])[:12]}")
    return best


def with_absolute_local_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its local relative paths (the dataset, a local pretrained encoder) made
    absolute here, where they were typed: Ray Train workers run in another directory, where
    ``models/wav2vec2-base`` would be taken for a Hub id."""

    def absolute(path: str | None, must_exist: bool = False) -> str | None:
        if path is None or "://" in path or os.path.isabs(path) or (must_exist and not Path(path).exists()):
            return path
        return str(Path(path).absolute())

    backbone = cfg.model.backbone.model_copy(update={"pretrained": absolute(cfg.model.backbone.pretrained, must_exist=True)})
    return cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update={"backbone": backbone}),
            "data": cfg.data.model_copy(update={"dataset": absolute(cfg.data.dataset)}),
        }
    )


def fit(cfg: TrainConfig, progress: bool = True, tracking_uri: str | None = None) -> TrainResult:
    """Run the Ray Train job described by ``cfg`` on the current Ray cluster.

    ``progress``: rank 0's progress bar and one line per epoch on this terminal;
    ``tracking_uri``: an MLflow run there (:mod:`emodistill.tracking`), logged from here."""
    from emodistill import console, tracking

    plan = preflight(cfg, check_storage=False)  # before any cluster time is spent
    if progress:
        print("\n".join(plan.lines()), flush=True)
    tracked = tracking.start_train_run(tracking_uri, cfg)
    try:
        if progress:
            import ray

            if not ray.is_initialized():
                ray.init()
            on_epoch = tracked.log_epoch if tracked else None
            with console.ProgressBoard(cfg.optim.epochs, cfg.run.checkpoint_metric, on_epoch=on_epoch) as board:
                trainer = build_trainer(cfg, progress, plan=plan, board=board.handle)
                console.quiet_python_loggers()  # ray.train / ray.data loggers exist now
                result = trainer.fit()
        else:
            trainer = build_trainer(cfg, progress, plan=plan)
            console.quiet_python_loggers()
            result = trainer.fit()
        if result.error:
            raise result.error
    except BaseException:
        if tracked:
            tracked.finish("FAILED")
        raise
    best_ckpt, best_metrics = best_of(result.best_checkpoints, cfg.run.checkpoint_metric, plan.metric_mode)
    with result.checkpoint.as_directory() as latest:  # the latest checkpoint carries the whole history
        history = read_checkpoint_config(latest).training.history
    best_path = best_ckpt.path
    if cfg.run.export_dir:
        best_path = export_checkpoint(best_ckpt, cfg.run.export_dir)
    tracking.finish_train_run(tracked, history, dict(best_metrics), best_path, best_ckpt.path, live=progress)
    return TrainResult(
        best_checkpoint=best_path,
        best_metrics=dict(best_metrics),
        history=history,
        run_dir=result.path,
        last_checkpoint=result.checkpoint,
        best_ray_checkpoint=best_ckpt,
        plan=plan,
        tracking=tracked,
    )


def export_checkpoint(checkpoint, dest: str, s3=None) -> str:
    """Copy a Ray checkpoint to ``dest`` as a clean project checkpoint (no optimiser state)."""
    with checkpoint.as_directory() as directory:
        loaded = load_checkpoint(directory)
        return save_checkpoint(
            loaded.model,
            dest,
            sample_rate=loaded.config.sample_rate,
            preprocessing=loaded.config.preprocessing,
            metadata=loaded.config.metadata,
            s3=s3,
        )
