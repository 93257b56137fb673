"""ONNX and TorchScript graphs of a cut model, and their int8 quantization.

Export: ``torch.onnx.export`` of :class:`~emodistill.inference.graph.LogitsGraph` with
dynamic batch and sample axes, by the dynamo exporter (``torch.export``, the default) or
the TorchScript-based one (``exporter="torchscript"``; faster to run, deprecated in torch).

int8 (:func:`quantize_int8`):

    blocks, heads  dynamic int8 of MatMul/Gemm (weights int8, activations quantized per
                   call): no calibration, keeps attention accurate. The default.
    conv encoder   with ``convs=True``, also static QDQ int8 of every conv but the first
                   (per-channel weights, uint8 activations with ranges calibrated on
                   clips): the convs are most of the time of a shallow exit, and dynamic
                   quantization leaves them in fp32. The first conv (1 input channel: the
                   raw waveform) stays fp32. Trained conv encoders can be sensitive to
                   8-bit activations (the demo model loses agreement), so this is opt-in.

Whether that keeps the answers is checked on evaluation clips by the export
(``inference.verify``), never assumed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from emodistill.inference.graph import LogitsGraph

Exporter = Literal["dynamo", "torchscript"]
OPSET = 18


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """Silence the exporters' and quantizers' progress lines, deprecation warnings and
    log lines: our command prints its own lines."""
    loggers = [logging.getLogger(n) for n in ("", "torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")) as sink:
            warnings.simplefilter("ignore")
            try:
                yield
            finally:
                sink.close()
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def receptive_field(conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> int:
    """Fewest samples that give the conv encoder one output frame."""
    field, jump = 1, 1
    for k, s in zip(conv_kernel, conv_stride):
        field += (k - 1) * jump
        jump *= s
    return field


def example_inputs(graph: LogitsGraph, samples: int = 32000, batch: int = 2) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(batch, samples, generator=gen) * 0.1
    if not graph.with_mask:
        return (values,)
    mask = torch.ones(batch, samples, dtype=torch.long)
    mask[1:, samples * 3 // 4 :] = 0  # a padded row, so the mask is not folded away
    return (values, mask)


def export_onnx(graph: LogitsGraph, path: str | Path, exporter: Exporter = "dynamo") -> Path:
    """Write ``graph`` as ONNX at ``path``: inputs ``input_values`` (batch, samples) float32
    [+ ``attention_mask`` (batch, samples) int64], output ``logits`` (batch, classes)."""
    path = Path(path)
    inputs = example_inputs(graph)
    names = graph.input_names
    config = graph.model.backbone.config
    min_samples = receptive_field(config.conv_kernel, config.conv_stride)
    with quiet_exporters(), torch.inference_mode(False), torch.no_grad():
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            samples = torch.export.Dim("samples", min=min_samples, max=16000 * 3600)
            shapes = {name: {0: batch, 1: samples} for name in names}
            program = torch.onnx.export(
                graph, inputs, dynamo=True, input_names=names, output_names=["logits"],
                dynamic_shapes=shapes, opset_version=OPSET, verbose=False, optimize=True,
            )
            program.save(str(path))
        elif exporter == "torchscript":
            axes = {name: {0: "batch", 1: "samples"} for name in names}
            axes["logits"] = {0: "batch"}
            torch.onnx.export(
                graph, inputs, str(path), dynamo=False, input_names=names, output_names=["logits"],
                dynamic_axes=axes, opset_version=17,
            )
        else:
            raise ValueError(f"unknown exporter {exporter!r}; choose dynamo or torchscript")
    return path


def export_torchscript(graph: LogitsGraph, path: str | Path) -> Path:
    """Write ``graph`` traced by torch.jit at ``path`` (``model.pt``)."""
    path = Path(path)
    inputs = example_inputs(graph)
    if graph.dtype is not None:
        graph = graph.to(graph.dtype)
    with quiet_exporters(), torch.no_grad():
        traced = torch.jit.trace(graph, inputs, check_trace=False)
        torch.jit.save(traced, str(path))
    return path


class _Clips:
    """onnxruntime's calibration reader over clips (one clip per run)."""

    def __init__(self, clips: Sequence[np.ndarray], with_mask: bool):
        self._clips = iter(list(clips))
        self._with_mask = with_mask

    def get_next(self) -> dict[str, np.ndarray] | None:
        clip = next(self._clips, None)
        if clip is None:
            return None
        values = np.asarray(clip, dtype=np.float32)[None, :]
        feeds = {"input_values": values}
        if self._with_mask:
            feeds["attention_mask"] = np.ones_like(values, dtype=np.int64)
        return feeds

    def rewind(self) -> None:  # part of CalibrationDataReader's interface; one pass is enough
        pass


def conv_nodes(model_path: str | Path) -> tuple[list[str], list[str]]:
    """(convs to quantize, convs kept in fp32): every Conv but those reading one input
    channel without groups (the waveform conv)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    keep, quantize = [], []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        weight = shapes.get(node.input[1])
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        (keep if weight is not None and weight[1] == 1 and group == 1 else quantize).append(node.name)
    return quantize, keep


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[np.ndarray] = (),
    with_mask: bool = False,
    convs: bool = False,
) -> Path:
    """int8 ONNX at ``out_path`` from the fp32 graph at ``fp32_path``: dynamic int8
    MatMul/Gemm; with ``convs``, also static QDQ convs calibrated on ``calibration`` clips
    (mono float32 at 16 kHz; cut or tiled to 3 s so every calibration run has one shape)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from emodistill.data.batching import BatchOptions, prepare

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="emodistill-int8-") as tmp, quiet_exporters():
        staged = Path(fp32_path)
        to_quantize, _kept = conv_nodes(fp32_path) if convs else ([], [])
        if to_quantize:
            if not calibration:
                raise ValueError("static int8 convs need calibration clips")
            fixed = BatchOptions(mode="fixed", fixed_samples=3 * 16000)
            clips = [prepare(np.asarray(c, dtype=np.float32), fixed) for c in calibration]
            staged = Path(tmp) / "convs_int8.onnx"
            quantize_static(
                str(fp32_path), str(staged), _Clips(clips, with_mask),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], nodes_to_quantize=to_quantize,
                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        quantize_dynamic(str(staged), str(out_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    return out_path


__all__ = ["Exporter", "export_onnx", "export_torchscript", "quantize_int8", "quiet_exporters", "receptive_field"]
