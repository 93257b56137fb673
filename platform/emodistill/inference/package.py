"""The exported directory: one exit's cut model in a layout Hugging Face users know.

The one owner of that layout (``emodistill export`` writes it through here, the
recognizer and serving read it through here):

    model.onnx | model.pt | model.safetensors   the cut model only, nothing deeper
    config.json               the backbone's Hugging Face config (cut to b blocks),
                              id2label / label2id / num_labels, and an ``emodistill``
                              section (:class:`ExportInfo`): exit, format, precision,
                              inputs, source checkpoint, verification, measured latency
    preprocessor_config.json  a Wav2Vec2FeatureExtractor config: 16 kHz mono float32
    README.md                 the model card (``inference.model_card``)

The graph normalises each clip itself (or, trained with ``normalize_waveform: false``, reads
its level as recorded), so ``do_normalize`` is false either way: feed raw audio.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from emodistill.checkpoint import CONFIG_FILE
from emodistill.config import Config
from emodistill.model.early_exit import ExitModelSpec
from emodistill.storage import get_fs, join

FORMAT = "emodistill-export"
VERSION = 1
PREPROCESSOR_FILE = "preprocessor_config.json"
CARD_FILE = "README.md"
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "safetensors": "model.safetensors"}

ModelFormat = Literal["onnx", "torchscript", "safetensors"]


class ExportInfo(Config):
    """The ``emodistill`` section of an exported ``config.json``."""

    format: Literal["emodistill-export"] = Field(FORMAT, description="Marks an emodistill export.")
    version: int = Field(VERSION, description="Version of this section's layout.")
    exit: str = Field(description="The exit this directory holds (exit_<block>).")
    block: int = Field(ge=1, description="Transformer blocks of the cut model.")
    labels: list[str] = Field(description="Class names in logit order.")
    spec: ExitModelSpec = Field(description="The cut model's spec (heads, labels, blocks): rebuilds it from weights.")
    model_format: ModelFormat = Field(description="onnx, torchscript or safetensors.")
    precision: Literal["fp32", "bf16", "int8"] = Field(description="Numeric precision of the stored model.")
    model_file: str = Field(description="File holding the model, relative to the directory.")
    inputs: list[str] = Field(description="Graph inputs: input_values (batch, samples) float32 [, attention_mask int64].")
    output: str = Field("logits", description="Graph output: logits (batch, classes) float32.")
    sample_rate: int = Field(16000, description="Sample rate of input_values, Hz.")
    exporter: str | None = Field(None, description="How the graph was made (torch.onnx exporter, torch.jit.trace).")
    source: dict[str, Any] = Field(default_factory=dict, description="Source checkpoint: uri, version, name.")
    verification: dict[str, Any] = Field(default_factory=dict, description="What the export checked, with its figures.")
    latency: dict[str, Any] = Field(default_factory=dict, description="This model's latency measured at export, with its device.")
    software: dict[str, str] = Field(default_factory=dict, description="Versions of emodistill, torch, onnxruntime.")


def hf_config(backbone: dict[str, Any], info: ExportInfo) -> dict[str, Any]:
    """``config.json``: the cut backbone's HF config + labels + the emodistill section."""
    labels = info.labels
    return {
        **backbone,
        "num_hidden_layers": info.block,
        "num_labels": len(labels),
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
        "emodistill": info.model_dump(mode="json"),
    }


def preprocessor_config(info: ExportInfo) -> dict[str, Any]:
    """``preprocessor_config.json`` as transformers' Wav2Vec2FeatureExtractor writes it."""
    return {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": info.sample_rate,
        "padding_side": "right",
        "padding_value": 0.0,
        "do_normalize": False,  # the graph normalises each clip itself, or keeps its level on purpose
        "return_attention_mask": "attention_mask" in info.inputs,
    }


def read_json(uri: str, name: str) -> dict[str, Any]:
    fs, path = get_fs(join(uri, name))
    try:
        with fs.open(path, "rb") as fh:
            return json.loads(fh.read())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{uri}: no {name}") from err


def kind_of(uri: str) -> Literal["checkpoint", "export"]:
    """Whether ``uri`` holds an emodistill checkpoint or an export (a clear error otherwise)."""
    try:
        config = read_json(uri, CONFIG_FILE)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no emodistill checkpoint or export at {uri}: it has no {CONFIG_FILE}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{uri}/{CONFIG_FILE} is not JSON: {err}") from err
    if config.get("format") == "emodistill-checkpoint":
        return "checkpoint"
    if isinstance(config.get("emodistill"), dict) and config["emodistill"].get("format") == FORMAT:
        return "export"
    raise ValueError(f"{uri}/{CONFIG_FILE} is neither an emodistill checkpoint nor an emodistill export")


def read_export(uri: str) -> tuple[ExportInfo, dict[str, Any]]:
    """(the emodistill section, the backbone config without labels and that section)."""
    config = read_json(uri, CONFIG_FILE)
    try:
        info = ExportInfo.model_validate(config.get("emodistill"))
    except ValueError as err:
        raise ValueError(f"{uri}/{CONFIG_FILE}: not a valid emodistill export: {err}") from err
    backbone = {k: v for k, v in config.items() if k not in ("emodistill", "id2label", "label2id", "num_labels")}
    return info, backbone


def read_model_bytes(uri: str, info: ExportInfo) -> bytes:
    fs, path = get_fs(join(uri, info.model_file))
    with fs.open(path, "rb") as fh:
        return fh.read()


__all__ = [
    "CARD_FILE",
    "ExportInfo",
    "MODEL_FILES",
    "PREPROCESSOR_FILE",
    "hf_config",
    "kind_of",
    "preprocessor_config",
    "read_export",
    "read_json",
    "read_model_bytes",
]
