"""The predictor of one exit: audio -> cut model -> probabilities. No Ray in here.

A serving replica wraps one :class:`ExitPredictor`; tests and benchmarks use it directly.
It holds only the cut model of its exit (conv encoder, blocks 1..b, head ``exit_b``),
loaded from the checkpoint without ever materialising deeper blocks.

``predict`` takes decoded clips (a padded batch, as ``@serve.batch`` hands them over) and
can return each clip's block output (:class:`BlockState`), which a deeper exit's
``resume`` continues from, so a confidence cascade never recomputes the shallow blocks.

:class:`OnnxExitPredictor` answers the same calls from an exported ONNX graph in
onnxruntime (``runtime: onnxruntime`` in the serve config): waveforms only, no block states.
``measure_latency`` is the start-up re-profile of a replica on a device other than the
exit profile's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emodistill.checkpoint import load_checkpoint
from emodistill.data.audio import SAMPLE_RATE
from emodistill.data.batching import pad_batch
from emodistill.model import exit_block


FRAME_SECONDS = 320 / SAMPLE_RATE  # one wav2vec2 frame: the conv encoder's stride (20 ms)


@dataclass
class BlockState:
    """One clip's output of block ``block`` (frames, hidden), float32 or float16: where a
    cascade resumes."""

    block: int
    hidden: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.hidden.nbytes)

    @property
    def seconds(self) -> float:
        """Audio seconds the state covers (frames x 20 ms)."""
        return self.hidden.shape[0] * FRAME_SECONDS


@dataclass
class Prediction:
    """One clip's answer from one exit."""

    exit: str
    block: int
    probabilities: list[float]  # in label order
    compute_ms: float  # model time of the batch this clip was in
    batch_size: int
    state: BlockState | None = None

    def scores(self, labels: Sequence[str]) -> dict[str, float]:
        return {label: float(p) for label, p in zip(labels, self.probabilities)}

    @property
    def margin(self) -> float:
        """top-1 minus top-2 probability: the cascade's confidence."""
        top = sorted(self.probabilities, reverse=True)
        return float(top[0] - (top[1] if len(top) > 1 else 0.0))


class ExitPredictor:
    """Holds the cut model of one exit and answers batches of clips."""

    def __init__(self, checkpoint: str, exit: str, device: str = "cpu", threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        loaded = load_checkpoint(checkpoint, exit=exit)
        self.exit = exit
        self.block = exit_block(exit)
        self.labels = loaded.model.labels
        self.model_name = loaded.name
        self.version = loaded.version
        self.device = torch.device(device)
        self.model = loaded.model.to(self.device).eval()
        self.num_parameters = sum(p.numel() for p in self.model.parameters())

    @torch.inference_mode()
    def predict(
        self, waves: Sequence[np.ndarray], return_state: bool = False, state_dtype: str = "float32"
    ) -> list[Prediction]:
        """Answer clips (each mono float32 at 16 kHz) as one padded batch; with
        ``return_state`` each answer carries the clip's block output in ``state_dtype``."""
        start = time.perf_counter()
        values, mask = pad_batch(list(waves))
        out = self.model(values.to(self.device), mask.to(self.device), exits=[self.exit])
        return self._answer(out, len(waves), return_state, start, state_dtype)

    @torch.inference_mode()
    def resume(
        self, states: Sequence[BlockState], return_state: bool = False, state_dtype: str = "float32"
    ) -> list[Prediction]:
        """Continue clips from a shallower exit's block output through this exit's deeper blocks."""
        start = time.perf_counter()
        froms = {s.block for s in states}
        if len(froms) != 1:
            raise ValueError(f"a resumed batch must start from one block, got {sorted(froms)}")
        from_block = froms.pop()
        lengths = [s.hidden.shape[0] for s in states]
        width, dim = max(lengths), states[0].hidden.shape[1]
        hidden = torch.zeros(len(states), width, dim)
        for i, s in enumerate(states):
            hidden[i, : lengths[i]] = torch.from_numpy(np.array(s.hidden, dtype=np.float32))
        frame_mask = None
        if min(lengths) != width:
            frame_mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
            frame_mask = frame_mask.to(self.device)
        out = self.model.resume(hidden.to(self.device), from_block, frame_mask, exits=[self.exit])
        return self._answer(out, len(states), return_state, start, state_dtype)

    def _answer(self, out, count: int, return_state: bool, start: float, state_dtype: str = "float32") -> list[Prediction]:
        probs = torch.softmax(out.exits[self.exit].logits.float(), dim=-1).cpu().numpy()
        states: list[BlockState | None] = [None] * count
        if return_state:
            hidden = out.hidden[self.exit].to(getattr(torch, state_dtype)).cpu().numpy()
            lengths = out.frame_lengths or [hidden.shape[1]] * count
            states = [BlockState(self.block, np.ascontiguousarray(hidden[i, :n])) for i, n in enumerate(lengths)]
        ms = (time.perf_counter() - start) * 1000.0
        return [Prediction(self.exit, self.block, p.tolist(), ms, count, s) for p, s in zip(probs, states)]

    def warmup(self, seconds: Sequence[float] = (1.0, 3.0), repeats: int = 2) -> None:
        """Run the model a few times so the first request does not pay for cold kernels."""
        for _ in range(repeats):
            for s in seconds:
                self.predict([np.zeros(int(s * SAMPLE_RATE), dtype=np.float32)])

    runtime = "torch"

    def measure_latency(self, seconds: Sequence[float] = (1.0, 3.0), warmup: int = 1, repeats: int = 5) -> dict[str, dict[str, float]]:
        """{"<seconds>": {"p50", "p95"}} ms of batch-1 calls on noise clips, here and now (a
        replica's start-up re-profile; CUDA calls synchronised)."""
        from emodistill.evaluate.latency import time_interleaved

        rng = np.random.default_rng(0)
        clips = {f"{s:g}": (rng.standard_normal(int(s * SAMPLE_RATE)) * 0.1).astype(np.float32) for s in seconds}
        stats = time_interleaved({k: (lambda w=w: self.predict([w])) for k, w in clips.items()}, warmup, repeats, str(self.device))
        return {k: {"p50": round(v["latency_ms_p50"], 3), "p95": round(v["latency_ms_p95"], 3)} for k, v in stats.items()}

    def describe(self) -> dict:
        return {
            "exit": self.exit,
            "block": self.block,
            "labels": self.labels,
            "model": self.model_name,
            "version": self.version,
            "params": self.num_parameters,
            "device": str(self.device),
            "runtime": self.runtime,
        }


class OnnxExitPredictor(ExitPredictor):
    """One exit answered by onnxruntime: ``model`` is an ``emodistill export --format onnx``
    directory of this exit (fp32 or int8), or None to export the fp32 graph of the
    checkpoint's cut model now. Waveforms only: no block states in or out."""

    runtime = "onnxruntime"

    def __init__(self, checkpoint: str, exit: str, model: str | None = None, device: str = "cpu", threads: int | None = None):
        from emodistill.inference.loading import open_runtime

        if threads:
            torch.set_num_threads(threads)
        if model is None:
            self.onnx, self.version, self.model_name = _export_fp32(checkpoint, exit, device, threads)
        else:
            opened = open_runtime(model, exit, device=device, threads=threads)
            if opened.info is None or opened.info.model_format != "onnx":
                raise ValueError(f"onnx_model {model} is not an ONNX export (run `emodistill export ... --format onnx`)")
            self.onnx, self.version, self.model_name = opened.runtime, opened.version, opened.model_name
        self.exit, self.block = exit, exit_block(exit)
        self.labels = list(self.onnx.labels)
        self.device = torch.device(device)
        self.num_parameters = 0  # not counted for a graph
        self.precision = self.onnx.precision

    def predict(self, waves: Sequence[np.ndarray], return_state: bool = False, state_dtype: str = "float32") -> list[Prediction]:
        if return_state:
            raise ValueError(f"{self.exit} runs onnxruntime: it has no block output to hand on (set cascade.reuse_hidden_states: false)")
        start = time.perf_counter()
        logits = self.onnx.logits(list(waves))
        z = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = z / z.sum(axis=-1, keepdims=True)
        ms = (time.perf_counter() - start) * 1000.0
        return [Prediction(self.exit, self.block, p.tolist(), ms, len(waves)) for p in probs]

    def resume(self, states: Sequence[BlockState], return_state: bool = False, state_dtype: str = "float32") -> list[Prediction]:
        raise ValueError(f"{self.exit} runs onnxruntime: it cannot continue from a block output")

    def describe(self) -> dict:
        return {**super().describe(), "runtime": f"onnxruntime-{self.precision}"}


def _export_fp32(checkpoint: str, exit: str, device: str, threads: int | None):
    """(OnnxRuntime, version, name): the fp32 graph of ``exit``'s cut model, exported now."""
    import tempfile
    from pathlib import Path

    from emodistill.inference.graph import LogitsGraph
    from emodistill.inference.onnx import export_onnx
    from emodistill.inference.runtime import OnnxRuntime
    from emodistill.inference.weights import load_cut

    cut = load_cut(checkpoint, exit)
    with tempfile.TemporaryDirectory(prefix="emodistill-onnx-") as tmp:
        path = export_onnx(LogitsGraph(cut.model, exit), Path(tmp) / "model.onnx", "torchscript")
        runtime = OnnxRuntime(path.read_bytes(), exit, cut.labels, "fp32", device=device, threads=threads)
    return runtime, cut.version, cut.name


def make_predictor(
    checkpoint: str, exit: str, runtime: str = "torch", onnx_model: str | None = None, device: str = "cpu", threads: int | None = None
) -> ExitPredictor:
    """The predictor of one exit for a ``runtime`` of the serve config (torch or onnxruntime)."""
    if runtime == "onnxruntime":
        return OnnxExitPredictor(checkpoint, exit, onnx_model, device=device, threads=threads)
    if runtime != "torch":
        raise ValueError(f"runtime {runtime!r} is not torch or onnxruntime")
    return ExitPredictor(checkpoint, exit, device=device, threads=threads)


__all__ = ["BlockState", "ExitPredictor", "OnnxExitPredictor", "Prediction", "make_predictor"]
