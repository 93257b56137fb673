"""Read a checkpoint's cut model without reading the rest of its weights.

A checkpoint's ``model.safetensors`` holds every block and every head. The model cut at
``exit_b`` needs the conv encoder, blocks 1..b and head ``exit_b``: for exit_3 of a
wav2vec2-base checkpoint that is a third of the file. :class:`SafetensorsReader` reads
only the tensors asked for:

    local file   safetensors.safe_open (memory-mapped; untouched tensors are never read)
    s3:// etc.   the safetensors header (8-byte length + JSON) by a range request, then
                 one range request per run of adjacent wanted tensors (fs.cat_ranges)

and counts what it read (:class:`ReadStats`), so tests and users can see it.
:func:`load_cut` builds the cut model on the ``meta`` device (no random init, no memory
for deeper blocks) and assigns the tensors read.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from emodistill.checkpoint import WEIGHTS_FILE, CheckpointConfig, read_checkpoint_config
from emodistill.exits import exit_block
from emodistill.model.backbone import backbone_from_dict
from emodistill.model.early_exit import EarlyExitModel, ExitModelSpec
from emodistill.storage import get_fs, is_remote, join

# safetensors dtype names -> torch dtypes (the format's own table)
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MERGE_GAP = 64 * 1024  # read two wanted tensors in one request when at most this many bytes lie between


@dataclass
class ReadStats:
    """What a reader took from the file: tensor names and bytes of tensor data."""

    file_bytes: int = 0
    tensors: list[str] = field(default_factory=list)
    bytes_read: int = 0  # payload bytes of the tensors read (plus merge gaps on remote files)

    @property
    def fraction(self) -> float:
        return self.bytes_read / self.file_bytes if self.file_bytes else 0.0


class SafetensorsReader:
    """Partial reads of one ``.safetensors`` file, local (``safe_open``) or remote (ranges)."""

    def __init__(self, uri: str):
        self.uri = str(uri)
        self.fs, self.path = get_fs(self.uri)
        self.remote = is_remote(self.uri)
        self.stats = ReadStats(file_bytes=int(self.fs.size(self.path)))
        if self.remote:
            self._header, self._data_start = self._read_header()
        else:
            from safetensors import safe_open

            self._local = safe_open(self.path, framework="pt", device="cpu")
            self._header = None

    def keys(self) -> list[str]:
        if self._header is not None:
            return [k for k in self._header if k != "__metadata__"]
        return list(self._local.keys())

    def read(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The tensors ``names`` (a KeyError naming the first missing one)."""
        names = list(names)
        known = set(self.keys())
        missing = [n for n in names if n not in known]
        if missing:
            raise KeyError(f"{self.uri} lacks {len(missing)} tensors, e.g. {missing[:3]}")
        out = self._read_remote(names) if self.remote else self._read_local(names)
        self.stats.tensors.extend(names)
        return out

    # ---- local: safe_open maps the file and copies only the tensors asked for ----------
    def _read_local(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        out = {}
        for name in names:
            tensor = self._local.get_tensor(name)
            out[name] = tensor
            self.stats.bytes_read += tensor.numel() * tensor.element_size()
        return out

    # ---- remote: header, then byte ranges ----------------------------------------------
    def _read_header(self) -> tuple[dict[str, Any], int]:
        head = self.fs.cat_file(self.path, start=0, end=8)
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024 * 1024 or 8 + length > self.stats.file_bytes:
            raise ValueError(f"{self.uri} is not a safetensors file (header length {length})")
        header = json.loads(self.fs.cat_file(self.path, start=8, end=8 + length))
        return header, 8 + length

    def _read_remote(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        spans = sorted((self._header[n]["data_offsets"][0], self._header[n]["data_offsets"][1], n) for n in names)
        groups: list[list[tuple[int, int, str]]] = []
        for span in spans:
            if groups and span[0] - groups[-1][-1][1] <= _MERGE_GAP:
                groups[-1].append(span)
            else:
                groups.append([span])
        starts = [self._data_start + g[0][0] for g in groups]
        ends = [self._data_start + g[-1][1] for g in groups]
        blobs = self.fs.cat_ranges([self.path] * len(groups), starts, ends)
        out = {}
        for group, blob in zip(groups, blobs):
            if isinstance(blob, Exception):
                raise blob
            self.stats.bytes_read += len(blob)
            base = group[0][0]
            for begin, end, name in group:
                info = self._header[name]
                dtype = _DTYPES.get(info["dtype"])
                if dtype is None:
                    raise ValueError(f"{self.uri}: tensor {name} has unsupported dtype {info['dtype']}")
                raw = bytearray(blob[begin - base : end - base])
                tensor = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
                out[name] = tensor.reshape(info["shape"])
        return out


@dataclass
class CutModel:
    """The cut model of one exit, read from a checkpoint."""

    model: EarlyExitModel  # eval mode, CPU: conv encoder, blocks 1..b, head exit_b
    exit: str
    config: CheckpointConfig  # the checkpoint's config.json (labels, metadata, ...)
    uri: str
    stats: ReadStats
    _version: str | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.model.labels)

    @property
    def version(self) -> str:
        """The checkpoint's version (first 12 hex digits of the weights' sha256, as
        :func:`emodistill.checkpoint.load_checkpoint` gives it). Streams the whole file
        once, on first use; predicting never needs it."""
        if self._version is None:
            self._version = weights_version(self.uri)
        return self._version

    @property
    def name(self) -> str:
        """The backbone the model was fine-tuned from (as the checkpoint names it)."""
        backbone = self.config.metadata.get("train_config", {}).get("model", {}).get("backbone", {})
        if backbone.get("pretrained"):
            return str(backbone["pretrained"])
        if backbone.get("arch"):
            return f"{backbone.get('family', 'wav2vec2')}-{backbone['arch']}"
        return str(self.config.backbone.get("model_type", "unknown"))


def cut_spec(config: CheckpointConfig, exits: str | Sequence[str]) -> tuple[ExitModelSpec, dict[str, Any]]:
    """(spec, backbone config dict) of the model cut after the deepest of ``exits`` with
    the heads of ``exits`` only; a clear error naming the checkpoint's exits when it lacks one."""
    names = [exits] if isinstance(exits, str) else list(exits)
    spec = config.model
    missing = [n for n in names if n not in spec.heads]
    if missing or not names:
        raise ValueError(f"the checkpoint has no exit {(missing or names or [None])[0]!r}; it has {list(spec.heads)}")
    block = max(exit_block(n) for n in names)
    heads = {n: kind for n, kind in spec.heads.items() if n in set(names)}
    cut = spec.model_copy(update={"heads": heads, "num_blocks": block})
    backbone = {**config.backbone, "num_hidden_layers": block}
    return cut, backbone


def build_cut(config: CheckpointConfig, exits: str | Sequence[str], on_meta: bool = False) -> EarlyExitModel:
    """The (uninitialised) model cut for ``exits``; ``on_meta`` allocates nothing."""
    spec, backbone = cut_spec(config, exits)
    if on_meta:
        with torch.device("meta"):
            return EarlyExitModel(backbone_from_dict(backbone), spec)
    return EarlyExitModel(backbone_from_dict(backbone), spec)


def load_cut(uri: str, exit: str | None = None) -> CutModel:
    """The cut model of ``exit`` (default: the deepest) from the checkpoint at ``uri``
    (local or ``s3://``; S3 settings from the AWS environment, as for every checkpoint
    read), reading only its tensors from ``model.safetensors``."""
    uri = str(uri).rstrip("/")
    config = read_checkpoint_config(uri)
    name = exit or config.model.teacher
    model = build_cut(config, name, on_meta=True)
    reader = SafetensorsReader(join(uri, WEIGHTS_FILE))
    wanted = list(model.state_dict().keys())
    try:
        state = reader.read(wanted)
    except KeyError as err:
        raise ValueError(f"{uri}: {WEIGHTS_FILE} does not match config.json: {err.args[0]}") from err
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # a tensor the model holds but does not save: build it for real instead
        model = build_cut(config, name)
        model.load_state_dict(state, strict=True)
    return CutModel(model=model.eval(), exit=name, config=config, uri=uri, stats=reader.stats)


def weights_version(uri: str) -> str:
    """sha256 of ``model.safetensors`` (first 12 hex digits), streamed in 8 MiB chunks."""
    fs, path = get_fs(join(str(uri).rstrip("/"), WEIGHTS_FILE))
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()[:12]


__all__ = ["CutModel", "ReadStats", "SafetensorsReader", "build_cut", "cut_spec", "load_cut", "weights_version"]
