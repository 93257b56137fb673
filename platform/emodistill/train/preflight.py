"""Checks of a training config that need no Ray: what `emodistill train --dry-run` runs in
seconds, and what `fit` runs before it starts a cluster.

    the config itself      pydantic (unknown keys with "did you mean", YAML 1.2 scalars)
    the dataset            dataset.json exists and is readable (local or s3://)
    the selection          train / val / test parts resolve to speakers (data/folds.py)
    the backbone           its depth (arch, or the config.json of a local or s3:// model)
    the exits              none deeper than the backbone
    the checkpoint metric  one the run reports, of an exit the model has
    the run directory      an earlier run of the same name is not taken silently
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from emodistill.data.folds import Selection, select
from emodistill.data.schema import DatasetInfo, read_info
from emodistill.evaluate.metrics import Mode, metric_mode
from emodistill.storage import get_fs, join
from emodistill.train.config import TrainConfig, arch_depth


@dataclass
class Plan:
    """What a run will do, resolved against its dataset and backbone."""

    cfg: TrainConfig
    info: DatasetInfo
    selection: Selection
    depth: int | None  # backbone blocks (None: a hub id not in the local cache)
    exits: list[str] | None
    metric_mode: Mode
    train_rows: int
    val_rows: int

    def lines(self) -> list[str]:
        exits = ", ".join(self.exits) if self.exits else f"{self.cfg.model.exits} + the last block"
        return [
            f"dataset {self.cfg.data.dataset}: {self.info.num_rows} clips, labels {self.info.labels}",
            *self.selection.lines(),
            f"rows: train {self.train_rows}, val {self.val_rows}",
            f"model: {self.depth or '?'} blocks, exits {exits}",
            f"checkpoints ranked by {self.cfg.run.checkpoint_metric} ({self.metric_mode}), "
            f"{self.cfg.run.keep_checkpoints} kept",
        ]


def backbone_depth(cfg: TrainConfig) -> int | None:
    """Transformer blocks of the configured backbone, without loading any weights."""
    bb = cfg.model.backbone
    depth = arch_depth(cfg.model)
    if depth is not None or bb.pretrained is None:
        return depth
    if "num_hidden_layers" in bb.overrides:
        return int(bb.overrides["num_hidden_layers"])
    source = bb.pretrained
    if source.startswith("s3://") or source.startswith(("/", "./", "../", "~")):
        fs, root = get_fs(source, cfg.data.s3)
        path = join(root, "config.json")
        if not fs.exists(path):
            raise FileNotFoundError(f"model.backbone.pretrained: no config.json at {source}")
        with fs.open(path, "rb") as fh:
            return int(json.loads(fh.read()).get("num_hidden_layers", 12))
    try:  # a hub id: only what is cached already (no download in a check)
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(source, local_files_only=True).num_hidden_layers)
    except (OSError, ValueError):
        return None


def check_run_dir(cfg: TrainConfig, storage: str | None = None) -> None:
    """``run.if_exists: error`` and a run of that name already stored: say so now."""
    if cfg.run.if_exists != "error":
        return
    storage = storage or cfg.run.storage_path
    fs, root = get_fs(join(storage, cfg.run.name), cfg.data.s3)
    if fs.exists(root):
        raise FileExistsError(
            f"{join(storage, cfg.run.name)} already holds a run named {cfg.run.name!r}. Set run.if_exists=resume to "
            "continue it from its latest checkpoint, run.if_exists=overwrite to start over, or choose another run.name."
        )


def preflight(cfg: TrainConfig, check_storage: bool = True) -> Plan:
    """Every check above; a :class:`Plan` of the run, or the first problem as an error."""
    info = read_info(cfg.data.dataset, cfg.data.s3)
    if len(info.labels) < 2:
        raise ValueError(f"{cfg.data.dataset} has {len(info.labels)} label(s); a classifier needs at least 2")
    selection = select(info, **cfg.data.selection_args(), seed=cfg.seed, uri=cfg.data.dataset)
    depth = backbone_depth(cfg)
    exits = None
    if depth is not None:
        deeper = [b for b in cfg.model.exits if b > depth]
        if deeper:
            raise ValueError(f"model.exits {deeper} are deeper than the backbone's {depth} blocks")
        exits = cfg.exit_names(depth)
    try:
        mode: Mode = metric_mode(cfg.run.checkpoint_metric, exits)
    except ValueError as err:
        raise ValueError(f"run.checkpoint_metric: {err}") from None
    if check_storage:
        check_run_dir(cfg)
    train_rows, val_rows = (_rows(p, info) for p in (selection.train, selection.val))
    return Plan(cfg, info, selection, depth, exits, mode, train_rows, val_rows)


def _rows(part, info: DatasetInfo) -> int:
    try:
        return part.num_rows(info)
    except ValueError:
        return -1
