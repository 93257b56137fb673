"""The one checkpoint format: a directory (local or ``s3://``) holding

    model.safetensors   every weight of the model (safetensors, never pickle)
    config.json         {"format", "version", "model": ExitModelSpec, "backbone": HF config,
                         "sample_rate", "preprocessing", "metadata"}

``config.json`` is written last, so a directory without it is not a checkpoint; locally
the whole directory is written under a temporary name and renamed into place.
``load_checkpoint(uri, exit="exit_3")`` builds the cut model directly and reads only the
weights it holds, so a serving replica never materialises deeper blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import fsspec
import torch
from pydantic import Field
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from emodistill.config import Config
from emodistill.model.backbone import backbone_from_dict
from emodistill.model.early_exit import EarlyExitModel, ExitModelSpec, exit_block, exit_name

FORMAT = "emodistill-checkpoint"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointConfig(Config):
    """Contents of a checkpoint's config.json: everything needed to rebuild the model."""

    format: Literal["emodistill-checkpoint"] = Field(FORMAT, description="Marks an emodistill checkpoint.")
    version: int = Field(VERSION, description="Format version of this file.")
    model: ExitModelSpec = Field(description="Exits, head types, labels in logit order, depth.")
    backbone: dict[str, Any] = Field(description="The Hugging Face backbone config (config.to_dict()).")
    sample_rate: int = Field(16000, description="Sample rate the model expects, Hz.")
    preprocessing: dict[str, Any] = Field(default_factory=dict, description="How audio was prepared for training.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form: training config, metrics, data.")


@dataclass
class Checkpoint:
    model: EarlyExitModel
    config: CheckpointConfig
    version: str  # first 12 hex digits of the weights' sha256: changes whenever the weights do

    @property
    def name(self) -> str:
        """The backbone the model was fine-tuned from (hub id / path, or the random-init shape)."""
        backbone = self.config.metadata.get("train_config", {}).get("model", {}).get("backbone", {})
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
    preprocessing: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Write ``model`` as a checkpoint directory at ``uri`` (replacing what is there)."""
    config = CheckpointConfig(
        model=model.spec,
        backbone=model.backbone.config.to_dict(),
        sample_rate=sample_rate,
        preprocessing=preprocessing or {},
        metadata=_jsonable(metadata or {}),
    )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = save_safetensors(state, metadata={"format": FORMAT})
    text = json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=False)
    uri = str(uri)
    if "://" not in uri:
        return _save_local(Path(uri), weights, text)
    fs, path = fsspec.core.url_to_fs(uri)
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
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return str(target)


def read_checkpoint_config(uri: str | os.PathLike) -> CheckpointConfig:
    """Read and validate ``config.json`` of the checkpoint at ``uri``."""
    raw = _read_bytes(uri, CONFIG_FILE)
    try:
        return CheckpointConfig.model_validate(json.loads(raw))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{uri}: {CONFIG_FILE} is not a valid {FORMAT} config: {err}") from err


def load_checkpoint(uri: str | os.PathLike, exit: str | int | None = None) -> Checkpoint:
    """Rebuild the model saved at ``uri`` (local path or s3://), in eval mode on the CPU.

    With ``exit``, build only the cut model for that exit (conv encoder, blocks 1..b,
    head exit_b) and read only its weights.
    """
    config = read_checkpoint_config(uri)
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
    weights = _read_bytes(uri, WEIGHTS_FILE)
    state = load_safetensors(weights)
    wanted = model.state_dict().keys()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(f"{uri}: {WEIGHTS_FILE} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    model.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return Checkpoint(model=model.eval(), config=config, version=hashlib.sha256(weights).hexdigest()[:12])


def _read_bytes(uri: str | os.PathLike, name: str) -> bytes:
    uri = str(uri).rstrip("/")
    path = f"{uri}/{name}"
    try:
        with fsspec.open(path, "rb") as fh:
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
