"""`emodistill export CKPT OUT`: one exit's cut model as a verified, self-describing directory.

    1. the exit: ``--exit``, or ``--budget-ms`` on ``--device``: exits are tried deepest
       first, each built in the requested format and precision and timed there with the
       runtime that will run it; the first within budget is kept (none: an error naming
       the exit that came closest)
    2. the model file (``inference.package`` layout): ONNX (fp32, or int8), TorchScript
       (fp32 or bf16) or safetensors (fp32 or bf16) of the cut model only
    3. verification on evaluation clips (``inference.verify``): fp32 within 1e-4 of torch,
       int8/bf16 top-1 agreement >= 98 % and UAR within 1 point; a failed check is an
       error and leaves nothing behind
    4. latency of the exported model on the device, beside torch fp32 of the same exit
    5. config.json, preprocessor_config.json and the model card; the directory appears
       at OUT only when complete (written beside it, then renamed into place)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from emodistill.checkpoint import CONFIG_FILE, read_checkpoint_config
from emodistill.config import Config
from emodistill.exit_profile import DeviceInfo
from emodistill.exits import exit_block, is_exit_name, sort_exits
from emodistill.inference.graph import LogitsGraph
from emodistill.inference.onnx import Exporter, export_onnx, export_torchscript, quantize_int8
from emodistill.inference.package import (
    CARD_FILE,
    MODEL_FILES,
    PREPROCESSOR_FILE,
    ExportInfo,
    ModelFormat,
    hf_config,
    preprocessor_config,
)
from emodistill.inference.runtime import ExitRuntime, OnnxRuntime, TorchRuntime, TorchScriptRuntime, check_device
from emodistill.inference.timing import choose_exit, find_profile, measure_exits, time_runtimes
from emodistill.inference.verify import Clips, Verification, calibration_clips, check_export, evaluation_clips
from emodistill.inference.weights import CutModel, load_cut
from emodistill.storage import get_fs, is_remote, replace_dir

Quantize = Literal["none", "int8", "bf16"]


class ExportConfig(Config):
    """What to export, where, and how it is checked."""

    checkpoint: str = Field(description="Checkpoint directory (local or s3://).")
    out: str = Field(description="Directory to write (local or s3://); must not exist unless `overwrite`.")
    exit: str | None = Field(None, description="Exit to export (exit_<block>). Exclusive with `budget_ms`.")
    budget_ms: float | None = Field(
        None, gt=0, description="Export the deepest exit whose p95 latency on `device` is within this many ms."
    )
    budget_seconds: float = Field(3.0, gt=0, description="Clip length (s) the budget applies to.")
    device: str = Field("cpu", description="Device the latency is measured on (and the budget met): cpu, cuda, cuda:<n>.")
    format: ModelFormat = Field("onnx", description="onnx, torchscript or safetensors.")
    quantize: Quantize = Field("none", description="none (fp32), int8 (onnx only) or bf16 (torchscript, safetensors).")
    exporter: Exporter = Field(
        "torchscript",
        description="torch.onnx exporter: torchscript (handles the GRU/LSTM heads; fast) or dynamo (torch.export).",
    )
    int8_convs: bool = Field(
        False,
        description="With int8: also quantize the conv encoder (static QDQ, calibrated on training clips). Much "
        "faster on CPUs with VNNI, but trained conv encoders can lose accuracy; the verification decides.",
    )
    overwrite: bool = Field(False, description="Replace an existing `out`.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch and onnxruntime (default: torch's).")
    verify_clips: int = Field(256, ge=4, description="Most evaluation clips the verification uses.")
    repeats: int = Field(20, ge=3, description="Timed runs of the exported model (after warm-up).")

    @model_validator(mode="after")
    def _check(self) -> "ExportConfig":
        if (self.exit is None) == (self.budget_ms is None):
            raise ValueError("give exactly one of --exit or --budget-ms")
        if self.exit is not None and not is_exit_name(self.exit):
            raise ValueError(f"{self.exit!r} is not an exit name (exit_<block>, e.g. exit_3)")
        if self.quantize == "int8" and self.format != "onnx":
            raise ValueError("int8 is an onnxruntime quantization: use --format onnx with --quantize int8")
        if self.int8_convs and self.quantize != "int8":
            raise ValueError("--int8-convs goes with --quantize int8")
        if self.quantize == "bf16" and self.format == "onnx":
            raise ValueError("onnxruntime has no bf16 kernels on CPU: use --quantize int8 for onnx, "
                             "or --format torchscript|safetensors with bf16")
        return self

    @property
    def precision(self) -> str:
        return "fp32" if self.quantize == "none" else self.quantize


@dataclass
class Staged:
    """One exit built in the requested format, in a staging directory."""

    cut: CutModel
    directory: Path
    runtime: ExitRuntime  # runs the stored model
    fp32_runtime: ExitRuntime | None  # the fp32 graph an int8 model was made from
    exporter: str


@dataclass
class ExportResult:
    out: str
    info: ExportInfo
    verification: Verification
    budget_trace: list[str] = field(default_factory=list)


class ExportVerificationError(ValueError):
    """The exported model does not answer like the checkpoint."""


def _log_nothing(_: str) -> None:
    pass


def export(cfg: ExportConfig, log: Callable[[str], None] = _log_nothing) -> ExportResult:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = check_device(cfg.device)
    ckpt_config = read_checkpoint_config(cfg.checkpoint)
    exits = list(ckpt_config.model.heads)
    if cfg.exit is not None and cfg.exit not in exits:
        raise ValueError(f"{cfg.checkpoint} has no exit {cfg.exit!r}; it has {exits}")
    _check_out(cfg.out, cfg.overwrite)
    calibration = None
    if cfg.int8_convs:
        calibration = calibration_clips(ckpt_config.metadata, ckpt_config.model.labels)
        log(f"int8 calibration on {calibration.description}")

    parent = Path(cfg.out).absolute().parent if not is_remote(cfg.out) else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".emodistill-export-", dir=parent))
    try:
        trace: list[str] = []
        if cfg.exit is not None:
            staged = _stage(cfg, cfg.exit, work / cfg.exit, calibration)
        else:
            staged = _stage_for_budget(cfg, ckpt_config, work, calibration, trace, log)
        log(f"exporting {staged.cut.exit} of {cfg.checkpoint} as {cfg.format} {cfg.precision} ({staged.exporter})")

        clips = evaluation_clips(ckpt_config.metadata, staged.cut.labels, cfg.verify_clips)
        verification = _verify(staged, clips, cfg.precision)
        for line in verification.lines():
            log(line)
        if not verification.passed:
            raise ExportVerificationError(
                f"the exported {cfg.precision} model of {staged.cut.exit} fails verification, nothing was written:\n"
                + "\n".join(verification.lines())
            )

        latency = _latency(staged, cfg, device)
        log(f"latency ({staged.runtime.name}, {cfg.budget_seconds:g} s clip, batch 1, {latency['device']['name']}): "
            f"p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms; torch fp32 p50 {latency['torch_fp32_p50']:.1f} ms "
            f"({latency['torch_fp32_p50'] / latency['p50']:.2f}x)")
        info = _write_metadata(staged, cfg, ckpt_config, verification, latency)
        out = _publish(staged.directory, cfg.out)
        log(f"wrote {out}")
        return ExportResult(out=out, info=info, verification=verification, budget_trace=trace)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_out(out: str, overwrite: bool) -> None:
    fs, path = get_fs(out)
    if fs.exists(path):
        if not fs.isdir(path):
            raise FileExistsError(f"{out} exists and is not a directory")
        if fs.ls(path) and not overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")


def _stage(cfg: ExportConfig, exit: str, directory: Path, calibration: Clips | None) -> Staged:
    """Build ``exit`` in the requested format and precision under ``directory``."""
    directory.mkdir(parents=True)
    cut = load_cut(cfg.checkpoint, exit)
    labels, device = cut.labels, cfg.device
    target = directory / MODEL_FILES[cfg.format]
    if cfg.format == "onnx":
        graph = LogitsGraph(cut.model, exit)
        if cfg.quantize == "int8":
            fp32_path = directory.parent / f".{exit}-fp32.onnx"
            export_onnx(graph, fp32_path, cfg.exporter)
            quantize_int8(fp32_path, target, calibration.waves if calibration else [], graph.with_mask, cfg.int8_convs)
            fp32 = OnnxRuntime(str(fp32_path), exit, labels, "fp32", device, cfg.threads)
            runtime = OnnxRuntime(str(target), exit, labels, "int8", device, cfg.threads)
            scheme = "dynamic MatMul/Gemm" + (" + static QDQ convs" if cfg.int8_convs else "")
            return Staged(cut, directory, runtime, fp32, f"torch.onnx ({cfg.exporter}) + onnxruntime int8 ({scheme})")
        export_onnx(graph, target, cfg.exporter)
        runtime = OnnxRuntime(str(target), exit, labels, "fp32", device, cfg.threads)
        return Staged(cut, directory, runtime, None, f"torch.onnx ({cfg.exporter})")
    if cfg.format == "torchscript":
        dtype = torch.bfloat16 if cfg.quantize == "bf16" else None
        import copy

        graph = LogitsGraph(copy.deepcopy(cut.model), exit, dtype=dtype)
        export_torchscript(graph, target)
        runtime = TorchScriptRuntime(str(target), exit, labels, cfg.precision, device, with_mask=graph.with_mask)
        return Staged(cut, directory, runtime, None, "torch.jit.trace")
    from safetensors.torch import save_file

    from emodistill.inference.loading import model_from_safetensors

    dtype = torch.bfloat16 if cfg.quantize == "bf16" else torch.float32
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous() for k, v in cut.model.state_dict().items()}
    save_file(state, str(target), metadata={"format": "emodistill-export", "exit": exit})
    spec_info = ExportInfo(exit=exit, block=exit_block(exit), labels=labels, spec=cut.model.spec, model_format="safetensors",
                           precision=cfg.precision, model_file=target.name, inputs=["input_values", "attention_mask"])
    reloaded = model_from_safetensors(target.read_bytes(), cut.model.backbone.config.to_dict(), spec_info)
    runtime = TorchRuntime(reloaded, exit, device=device, precision="bf16" if cfg.quantize == "bf16" else "fp32")
    return Staged(cut, directory, runtime, None, "safetensors")


def _stage_for_budget(cfg: ExportConfig, ckpt_config, work: Path, calibration: Clips | None, trace: list[str], log) -> Staged:
    """The deepest exit within ``cfg.budget_ms`` on ``cfg.device``, measured with the
    runtime of the export."""
    where = f" (p95, {cfg.budget_seconds:g} s clip, {DeviceInfo.current(cfg.device).name}, {cfg.format} {cfg.precision})"
    exits = sort_exits(ckpt_config.model.heads)
    if cfg.format != "onnx":  # torch runtimes: every exit timed at once from random weights
        measured = measure_exits(ckpt_config, exits, cfg.device, "bf16" if cfg.quantize == "bf16" else "fp32",
                                 cfg.budget_seconds, warmup=1, repeats=cfg.repeats)
        latency = {n: s["p95"] for n, s in measured.items()}
        for n in exits:
            trace.append(f"{n}: {latency[n]:.1f} ms")
            log(f"budget {cfg.budget_ms:g} ms: {n} {latency[n]:.1f} ms")
        choice = choose_exit(latency, cfg.budget_ms, where)
        return _stage(cfg, choice.exit, work / choice.exit, calibration)
    latency = {}
    for n in reversed(exits):  # deepest first: stop at the first that fits
        staged = _stage(cfg, n, work / n, calibration)
        latency[n] = time_runtimes({n: staged.runtime}, cfg.budget_seconds, warmup=1, repeats=cfg.repeats)[n]["p95"]
        fits = latency[n] <= cfg.budget_ms
        trace.append(f"{n}: {latency[n]:.1f} ms")
        log(f"budget {cfg.budget_ms:g} ms: {n} {latency[n]:.1f} ms ({staged.runtime.name}) {'fits' if fits else 'over'}")
        if fits:
            return staged
        shutil.rmtree(staged.directory, ignore_errors=True)
    choose_exit(latency, cfg.budget_ms, where)  # raises, naming the closest
    raise AssertionError("unreachable")


def _torch_logits(cut: CutModel, waves: list[np.ndarray], batch: int = 8) -> np.ndarray:
    runtime = TorchRuntime(cut.model, cut.exit)
    order = np.argsort([w.size for w in waves], kind="stable")
    out = np.zeros((len(waves), len(cut.labels)), dtype=np.float32)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        out[idx] = runtime.logits([waves[i] for i in idx])
    return out


def _verify(staged: Staged, clips: Clips, precision: str) -> Verification:
    n = len(clips.waves)
    waves = clips.waves + clips.waves[:1]  # the first clip again: a batch of 2 on the dynamic batch axis
    torch_fp32 = _torch_logits(staged.cut, waves)[:n]
    stored = staged.runtime.logits(waves)
    graph_fp32 = quantized = None
    if precision == "fp32":
        graph_fp32 = stored[:n]
    elif staged.fp32_runtime is not None:
        graph_fp32, quantized = staged.fp32_runtime.logits(clips.waves), stored[:n]
    else:
        quantized = stored[:n]
    result = check_export(clips, torch_fp32, graph_fp32, quantized, precision)
    alone = staged.runtime.logits(clips.waves[:1])[0]
    batch_diff = float(np.abs(stored[0] - alone).max())
    result.checks.append((f"a clip in a batch of 2 answers as alone: max |diff| = {batch_diff:.2e}", batch_diff <= 1e-4))
    return result


def _latency(staged: Staged, cfg: ExportConfig, device: str) -> dict[str, Any]:
    reference = TorchRuntime(staged.cut.model, staged.cut.exit, device=device)
    stats = time_runtimes({"export": staged.runtime, "torch": reference}, cfg.budget_seconds, warmup=3, repeats=cfg.repeats)
    return {
        "runtime": staged.runtime.name,
        "seconds": cfg.budget_seconds,
        "batch": 1,
        "p50": stats["export"]["p50"],
        "p95": stats["export"]["p95"],
        "torch_fp32_p50": stats["torch"]["p50"],
        "device": DeviceInfo.current(device).model_dump(mode="json"),
    }


def _software() -> dict[str, str]:
    from emodistill import __version__

    versions = {"emodistill": __version__, "torch": torch.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    return versions


def _write_metadata(staged: Staged, cfg: ExportConfig, ckpt_config, verification: Verification, latency: dict) -> ExportInfo:
    from emodistill.inference.model_card import model_card

    cut = staged.cut
    inputs = ["input_values", "attention_mask"] if getattr(staged.runtime, "with_mask", cfg.format == "safetensors") else ["input_values"]
    info = ExportInfo(
        exit=cut.exit,
        block=exit_block(cut.exit),
        labels=cut.labels,
        spec=cut.model.spec,
        model_format=cfg.format,
        precision=cfg.precision,
        model_file=MODEL_FILES[cfg.format],
        inputs=inputs,
        sample_rate=ckpt_config.sample_rate,
        exporter=staged.exporter,
        source={"checkpoint": str(cfg.checkpoint), "version": cut.version, "name": cut.name},
        verification=verification.as_dict(),
        latency=latency,
        software=_software(),
    )
    directory = staged.directory
    backbone = cut.model.backbone.config.to_dict()
    (directory / CONFIG_FILE).write_text(json.dumps(hf_config(backbone, info), indent=2))
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor_config(info), indent=2))
    profile = find_profile(str(cfg.checkpoint))
    (directory / CARD_FILE).write_text(model_card(info, ckpt_config.metadata, profile, cut.name))
    return info


def _publish(staged: Path, out: str) -> str:
    """Move the finished directory to ``out`` (replacing what is there)."""
    if is_remote(out):
        fs, path = get_fs(out)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.put(str(staged) + "/", path, recursive=True)
        return out
    return replace_dir(staged, out)


__all__ = ["ExportConfig", "ExportResult", "ExportVerificationError", "export"]
