"""The one checkpoint format: a directory (local or ``s3://``) holding

    model.safetensors   every weight of the model (safetensors, never pickle)
    config.json         {"format", "version", "model": ExitModelSpec, "backbone": HF config,
                         "sample_rate", "preprocessing", "metadata"}

    train_state.pt      (training runs only) optimiser, schedule, epoch, RNG: for resuming

``config.json`` is written last, so a directory without it is not a checkpoint; locally
the whole directory is written under a temporary name and renamed into place.
``load_checkpoint(uri, exit="exit_3")`` builds the cut model directly and reads only the
weights it holds, so a serving replica never materialises deeper blocks.

The one owner of checkpoint metadata: a training run writes :class:`TrainingMetadata`
(its config, the train/val/test selection, the epoch, metrics and history) and
:class:`Preprocessing` (how clips were prepared, which evaluation repeats); readers take
them from ``CheckpointConfig.training`` / ``.preprocessing``, never by key. ``s3`` options
(endpoint, keys) reach every read and write of an ``s3://`` checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from emodistill.config import Config
from emodistill.data.batching import BatchOptions
from emodistill.data.folds import Selection, legacy_selection
from emodistill.exits import exit_block, exit_name
from emodistill.model.backbone import backbone_from_dict
from emodistill.model.early_exit import EarlyExitModel, ExitModelSpec
from emodistill.storage import S3Options, get_fs, is_remote, replace_dir

FORMAT = "emodistill-checkpoint"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.pt"


class Preprocessing(Config):
    """How clips were prepared: evaluation repeats ``val_batch`` unless told otherwise."""

    train_batch: BatchOptions | None = Field(None, description="How training clips were batched (None: unknown).")
    val_batch: BatchOptions = Field(
        default_factory=lambda: BatchOptions(mode="full"),
        description="How held-out clips were prepared for selection; evaluation uses the same by default.",
    )


class TrainingMetadata(Config):
    """What a training run records in each checkpoint it writes."""

    train_config: dict[str, Any] = Field(default_factory=dict, description="The run's TrainConfig (JSON).")
    dataset: str | None = Field(None, description="Dataset URI the run trained on.")
    selection: Selection | None = Field(None, description="Train / val / test parts (speakers) of the run.")
    epoch: int | None = Field(None, description="Epoch (0-based) after which this checkpoint was written.")
    metrics: dict[str, float] = Field(default_factory=dict, description="The epoch's reported metrics.")
    history: list[dict[str, float]] = Field(default_factory=list, description="Every epoch's metrics so far.")

    @classmethod
    def parse(cls, metadata: dict[str, Any]) -> TrainingMetadata:
        """From a checkpoint's metadata; checkpoints older than ``selection`` give their
        ``train_folds``/``val_folds`` (the held-out part then both selected and tested)."""
        known = {k: v for k, v in metadata.items() if k in cls.model_fields}
        if known.get("selection") is None:
            known["selection"] = legacy_selection(metadata)
        known["metrics"] = {k: float(v) for k, v in (known.get("metrics") or {}).items() if isinstance(v, (int, float))}
        known["history"] = [
            {k: float(v) for k, v in h.items() if isinstance(v, (int, float))} for h in known.get("history") or []
        ]
        return cls.model_validate(known)


@dataclass
class TrainState:
    """The part of a training checkpoint that only resuming needs."""

    epoch: int
    step: dict[str, Any]  # TrainStep.state_dict(): optimiser, scheduler, counters
    torch_rng: torch.Tensor


class CheckpointConfig(Config):
    """Contents of a checkpoint's config.json: everything needed to rebuild the model."""

    format: Literal["emodistill-checkpoint"] = Field(FORMAT, description="Marks an emodistill checkpoint.")
    version: int = Field(VERSION, description="Format version of this file.")
    model: ExitModelSpec = Field(description="Exits, head types, labels in logit order, depth.")
    backbone: dict[str, Any] = Field(description="The Hugging Face backbone config (config.to_dict()).")
    sample_rate: int = Field(16000, description="Sample rate the model expects, Hz.")
    preprocessing: dict[str, Any] = Field(
        default_factory=dict, description="How audio was prepared (Preprocessing; read it through `.prep`)."
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="TrainingMetadata of a training run (read it through `.training`), or free-form."
    )

    @property
    def prep(self) -> Preprocessing:
        """The typed preprocessing (defaults for checkpoints that recorded none)."""
        return Preprocessing.model_validate({k: v for k, v in self.preprocessing.items() if k in Preprocessing.model_fields})

    @property
    def training(self) -> TrainingMetadata:
        """The typed training metadata (empty fields for checkpoints not written by a run)."""
        return TrainingMetadata.parse(self.metadata)


@dataclass
class Checkpoint:
    model: EarlyExitModel
    config: CheckpointConfig
    version: str  # first 12 hex digits of the weights' sha256: changes whenever the weights do

    @property
    def name(self) -> str:
        """The backbone the model was fine-tuned from (hub id / path, or the random-init shape)."""
        backbone = self.config.training.train_config.get("model", {}).get("backbone", {})
        if backbone.get("pretrained"):
            return str(backbone["pretrained"])
        if backbone.get("arch"):
            return f"{backbone.get('family', 'wav2vec2')}-{backbone['arch']}"
        return str(self.config.backbone.get("model_type", "unknown"))


def save_checkpoint(
    model: EarlyExitModel,
    uri: str | os.PathLike,
    *,
    sample_rate: int = 16000,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
    metadata: TrainingMetadata | dict[str, Any] | None = None,
    s3: S3Options | None = None,
) -> str:
    """Write ``model`` as a checkpoint directory at ``uri`` (replacing what is there)."""
    if isinstance(preprocessing, Preprocessing):
        preprocessing = preprocessing.model_dump(mode="json")
    if isinstance(metadata, TrainingMetadata):
        metadata = metadata.model_dump(mode="json")
    config = CheckpointConfig(
        model=model.spec,
        backbone=model.backbone.config.to_dict(),
        sample_rate=sample_rate,
        preprocessing=_jsonable(preprocessing or {}),
        metadata=_jsonable(metadata or {}),
    )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = save_safetensors(state, metadata={"format": FORMAT})
    text = json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=False)
    uri = str(uri)
    if not is_remote(uri):
        return _save_local(Path(uri.removeprefix("file://")), weights, text)
    fs, path = get_fs(uri, s3)
    if fs.exists(f"{path}/{CONFIG_FILE}"):
        fs.rm(f"{path}/{CONFIG_FILE}")  # invalidate first: a crash mid-write leaves no checkpoint
    fs.pipe_file(f"{path}/{WEIGHTS_FILE}", weights)
    fs.pipe_file(f"{path}/{CONFIG_FILE}", text.encode())
    return uri


def _save_local(target: Path, weights: bytes, config_text: str) -> str:
    target = target.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    (tmp / WEIGHTS_FILE).write_bytes(weights)
    (tmp / CONFIG_FILE).write_text(config_text)
    return replace_dir(tmp, target)


def read_checkpoint_config(uri: str | os.PathLike, s3: S3Options | None = None) -> CheckpointConfig:
    """Read and validate ``config.json`` of the checkpoint at ``uri``."""
    raw = _read_bytes(uri, CONFIG_FILE, s3)
    try:
        return CheckpointConfig.model_validate(json.loads(raw))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{uri}: {CONFIG_FILE} is not a valid {FORMAT} config: {err}") from err


def load_checkpoint(uri: str | os.PathLike, exit: str | int | None = None, s3: S3Options | None = None) -> Checkpoint:
    """Rebuild the model saved at ``uri`` (local path or s3://), in eval mode on the CPU.

    With ``exit``, build only the cut model for that exit (conv encoder, blocks 1..b,
    head exit_b) and read only its weights.
    """
    config = read_checkpoint_config(uri, s3)
    spec = config.model
    backbone_cfg = dict(config.backbone)
    if exit is not None:
        name = exit if isinstance(exit, str) else exit_name(exit)
        if name not in spec.heads:
            raise ValueError(f"{uri}: no exit {name!r}; the checkpoint has {list(spec.heads)}")
        block = exit_block(name)
        spec = spec.model_copy(update={"heads": {name: spec.heads[name]}, "num_blocks": block})
        backbone_cfg["num_hidden_layers"] = block
    model = EarlyExitModel(backbone_from_dict(backbone_cfg), spec)
    weights = _read_bytes(uri, WEIGHTS_FILE, s3)
    state = load_safetensors(weights)
    wanted = model.state_dict().keys()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(f"{uri}: {WEIGHTS_FILE} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    model.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return Checkpoint(model=model.eval(), config=config, version=hashlib.sha256(weights).hexdigest()[:12])


def load_weights(model: torch.nn.Module, directory: str | os.PathLike) -> None:
    """Load a checkpoint's weights into an already built ``model`` (resuming a run)."""
    model.load_state_dict(load_safetensors(_read_bytes(directory, WEIGHTS_FILE)))


def save_train_state(directory: str | os.PathLike, state: TrainState) -> None:
    """Write what resuming needs beside the weights (a local directory, as Ray hands it)."""
    payload = {"epoch": state.epoch, "step": state.step, "torch_rng": state.torch_rng}
    torch.save(payload, os.path.join(directory, TRAIN_STATE_FILE))


def load_train_state(directory: str | os.PathLike) -> TrainState:
    """Read what :func:`save_train_state` wrote."""
    path = os.path.join(directory, TRAIN_STATE_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{directory} holds no {TRAIN_STATE_FILE}: not a checkpoint a run can resume from")
    raw = torch.load(path, weights_only=True)
    return TrainState(epoch=int(raw["epoch"]), step=raw["step"], torch_rng=raw["torch_rng"])


def _read_bytes(uri: str | os.PathLike, name: str, s3: S3Options | None = None) -> bytes:
    uri = str(uri).rstrip("/")
    fs, root = get_fs(uri, s3)
    try:
        with fs.open(f"{root}/{name}", "rb") as fh:
            return fh.read()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no checkpoint at {uri}: {name} is missing") from err


def _jsonable(value: Any) -> Any:
    """Metadata must survive json: tensors and numpy scalars become floats/lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
