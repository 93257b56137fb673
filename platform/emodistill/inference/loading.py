"""Open a runtime from a checkpoint (one exit's cut model) or from an exported directory.

    open_runtime("runs/demo/checkpoint", exit="exit_3")          TorchRuntime, fp32 or bf16
    open_runtime("out/exit_3-int8")                              what the export holds:
                                                                 OnnxRuntime, TorchScriptRuntime
                                                                 or TorchRuntime (safetensors)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch

from emodistill.inference.package import ExportInfo, kind_of, read_export, read_model_bytes
from emodistill.inference.runtime import ExitRuntime, OnnxRuntime, Precision, TorchRuntime, TorchScriptRuntime
from emodistill.inference.weights import CutModel, load_cut
from emodistill.model.backbone import backbone_from_dict
from emodistill.model.early_exit import EarlyExitModel


@dataclass
class Opened:
    """A runtime and where it came from."""

    runtime: ExitRuntime
    uri: str
    kind: str  # "checkpoint" or "export"
    model_name: str
    cut: CutModel | None = None  # checkpoints: the cut model, its config and read statistics
    info: ExportInfo | None = None  # exports: the config.json section

    @property
    def version(self) -> str | None:
        """The source checkpoint's weights version (hash)."""
        if self.cut is not None:
            return self.cut.version
        return (self.info.source or {}).get("version") if self.info else None

    def describe(self) -> dict[str, Any]:
        return {**self.runtime.describe(), "model": self.model_name, "source": self.uri, "kind": self.kind}


def open_runtime(
    uri: str,
    exit: str | None = None,
    device: str = "cpu",
    precision: Precision | None = None,
    threads: int | None = None,
) -> Opened:
    """The runtime for ``exit`` of the checkpoint at ``uri`` (torch; ``precision`` fp32 or
    bf16), or the model of the export at ``uri`` (its own runtime and precision)."""
    uri = str(uri).rstrip("/")
    if threads:
        torch.set_num_threads(threads)
    if kind_of(uri) == "checkpoint":
        cut = load_cut(uri, exit)
        runtime = TorchRuntime(cut.model, cut.exit, device=device, precision=precision or "fp32")
        return Opened(runtime=runtime, uri=uri, kind="checkpoint", model_name=cut.name, cut=cut)
    info, backbone = read_export(uri)
    if exit is not None and exit != info.exit:
        raise ValueError(f"{uri} is an export of {info.exit} only; it cannot answer from {exit}")
    if precision is not None and precision != info.precision and not (info.model_format == "safetensors" and precision in ("fp32", "bf16")):
        raise ValueError(f"{uri} holds a {info.precision} {info.model_format} model; it cannot run as {precision}")
    data = read_model_bytes(uri, info)
    if info.model_format == "onnx":
        runtime: ExitRuntime = OnnxRuntime(data, info.exit, info.labels, info.precision, device=device, threads=threads)
    elif info.model_format == "torchscript":
        runtime = TorchScriptRuntime(io.BytesIO(data), info.exit, info.labels, info.precision, device=device,
                                     with_mask="attention_mask" in info.inputs)
    else:
        runtime = TorchRuntime(model_from_safetensors(data, backbone, info), info.exit, device=device,
                               precision=precision or ("bf16" if info.precision == "bf16" else "fp32"))
    name = str((info.source or {}).get("name") or backbone.get("model_type", "unknown"))
    return Opened(runtime=runtime, uri=uri, kind="export", model_name=name, info=info)


def model_from_safetensors(data: bytes, backbone: dict[str, Any], info: ExportInfo) -> EarlyExitModel:
    """The cut model of an exported ``model.safetensors`` (fp32 or bf16 tensors)."""
    from safetensors.torch import load

    state = load(data)
    with torch.device("meta"):
        model = EarlyExitModel(backbone_from_dict(backbone), info.spec)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


__all__ = ["Opened", "model_from_safetensors", "open_runtime"]
