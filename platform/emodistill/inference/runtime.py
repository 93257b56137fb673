"""Runtimes: one exit's cut model behind one small interface, whatever executes it.

    runtime.logits(waves) -> (batch, classes) float32     waves: mono float32 at 16 kHz

Backends:

    TorchRuntime        the cut EarlyExitModel; fp32, or bf16 autocast (CPU with AVX512-BF16
                        or AMX, CUDA); cpu or cuda. Padded batches with an attention mask.
    OnnxRuntime         an exported model.onnx (fp32 or int8) in onnxruntime; CPU or CUDA
                        execution provider.
    TorchScriptRuntime  an exported model.pt (torch.jit).

No Ray in here: serving, the CLI, the Python API and the benchmarks all call these.
Graph runtimes (ONNX, TorchScript) of GroupNorm backbones take equal-length batches
(see ``inference.graph``); they run clips of one length together, so a mixed batch gives
each clip its own answer, like the torch runtime does with its mask.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Literal

import numpy as np
import torch

from emodistill.data.batching import pad_batch
from emodistill.evaluate.latency import check_device  # re-exported: inference callers name it from here
from emodistill.exits import exit_block
from emodistill.model.early_exit import EarlyExitModel

Backend = Literal["torch", "onnxruntime", "torchscript"]
Precision = Literal["fp32", "bf16", "int8"]
SAMPLE_RATE = 16000


class ExitRuntime(ABC):
    """One exit's cut model, ready to answer batches of clips."""

    backend: str
    precision: str
    device: str
    exit: str
    labels: list[str]

    @property
    def block(self) -> int:
        return exit_block(self.exit)

    @property
    def name(self) -> str:
        """``torch-fp32``, ``onnxruntime-int8``, ...: how a table or a log names this runtime."""
        return f"{self.backend}-{self.precision}"

    @abstractmethod
    def logits(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Logits of each clip (batch, classes), float32, on the host."""

    def warmup(self, seconds: Sequence[float] = (1.0, 3.0), repeats: int = 2) -> None:
        """Run a few times so the first real call does not pay for cold kernels."""
        for _ in range(repeats):
            for s in seconds:
                self.logits([np.zeros(int(s * SAMPLE_RATE), dtype=np.float32)])

    def describe(self) -> dict:
        return {"exit": self.exit, "block": self.block, "labels": self.labels, "runtime": self.name, "device": self.device}


class TorchRuntime(ExitRuntime):
    """The cut model in torch: fp32, or bf16 autocast (matmuls and convs in bf16, norms in fp32)."""

    backend = "torch"

    def __init__(self, model: EarlyExitModel, exit: str | None = None, device: str = "cpu", precision: Precision = "fp32"):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"the torch runtime runs fp32 or bf16, not {precision!r} (int8: export to ONNX)")
        self.device = check_device(device)
        self.exit = exit or model.exit_names[-1]
        if self.exit not in model.exit_names:
            raise ValueError(f"no exit {self.exit!r} in this model; it has {model.exit_names}")
        self.precision = precision
        self.labels = model.labels
        self.model = model.float().to(self.device).eval()  # bf16 weights (a bf16 export) run under autocast
        self.num_parameters = sum(p.numel() for p in self.model.parameters())

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)
        return nullcontext()

    @torch.inference_mode()
    def outputs(self, values: torch.Tensor, mask: torch.Tensor | None):
        """The model's full output (logits, pooled features, block output) for a padded batch."""
        with self.autocast():
            return self.model(values.to(self.device), None if mask is None else mask.to(self.device), exits=[self.exit])

    def logits(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        values, mask = pad_batch(list(waves))
        out = self.outputs(values, mask)
        return out.exits[self.exit].logits.float().cpu().numpy()

    def describe(self) -> dict:
        return {**super().describe(), "params": self.num_parameters}


class _GraphRuntime(ExitRuntime):
    """A ``(input_values[, attention_mask]) -> logits`` graph: equal-length groups, or a mask."""

    with_mask: bool

    def logits(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        waves = [np.asarray(w, dtype=np.float32) for w in waves]
        if not waves:
            raise ValueError("cannot run zero clips")
        if self.with_mask:
            values, mask = pad_batch(waves)
            return self._run(values.numpy(), mask.numpy())
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            groups.setdefault(w.shape[0], []).append(i)
        out: np.ndarray | None = None
        for idx in groups.values():
            logits = self._run(np.stack([waves[i] for i in idx]), None)
            if out is None:
                out = np.zeros((len(waves), logits.shape[1]), dtype=np.float32)
            out[idx] = logits
        return out

    @abstractmethod
    def _run(self, values: np.ndarray, mask: np.ndarray | None) -> np.ndarray: ...


class OnnxRuntime(_GraphRuntime):
    """An exported ``model.onnx`` in onnxruntime (all graph optimisations on)."""

    backend = "onnxruntime"

    def __init__(
        self,
        model: str | bytes,
        exit: str,
        labels: Sequence[str],
        precision: Precision = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        spin: bool = False,
    ):
        """``spin``: let idle intra-op threads busy-wait for the next call (onnxruntime's
        default). Off here: on a CPU shared with other replicas, torch or decoding threads,
        spinning threads take the cores the others need (and skew side-by-side timings)."""
        import onnxruntime as ort

        self.device = check_device(device)
        self.exit, self.labels, self.precision = exit, list(labels), precision
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: no "initializer appears in graph inputs" noise
        options.enable_profiling = False  # never onnxruntime_profile__*.json in the working directory
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
        providers = ["CPUExecutionProvider"]
        if self.device != "cpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(
                    f"device {self.device!r}: this onnxruntime has no CUDA execution provider "
                    "(install onnxruntime-gpu, or use --device cpu)"
                )
            index = torch.device(self.device).index or 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(model, options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.with_mask = "attention_mask" in self.input_names

    def _run(self, values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        feeds = {"input_values": values}
        if mask is not None:
            feeds["attention_mask"] = mask.astype(np.int64)
        return self.session.run(["logits"], feeds)[0].astype(np.float32, copy=False)


class TorchScriptRuntime(_GraphRuntime):
    """An exported ``model.pt`` (torch.jit)."""

    backend = "torchscript"

    def __init__(self, path: str, exit: str, labels: Sequence[str], precision: Precision = "fp32", device: str = "cpu", with_mask: bool = False):
        self.device = check_device(device)
        self.exit, self.labels, self.precision, self.with_mask = exit, list(labels), precision, with_mask
        self.module = torch.jit.load(path, map_location=self.device).eval()

    @torch.inference_mode()
    def _run(self, values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        args = [torch.from_numpy(values).to(self.device)]
        if mask is not None:
            args.append(torch.from_numpy(mask).to(self.device))
        return self.module(*args).float().cpu().numpy()


def timed_logits(runtime: ExitRuntime, waves: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
    """(logits, milliseconds) of one call; the host copy of the logits ends the clock, so
    CUDA work is waited for."""
    start = time.perf_counter()
    logits = runtime.logits(waves)
    return logits, (time.perf_counter() - start) * 1000.0


__all__ = [
    "Backend",
    "ExitRuntime",
    "OnnxRuntime",
    "Precision",
    "TorchRuntime",
    "TorchScriptRuntime",
    "check_device",
    "timed_logits",
]
