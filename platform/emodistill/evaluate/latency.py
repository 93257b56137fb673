"""Latency of cut models: batch 1, warm-up, then percentiles over repeated runs.

Used by ``emodistill profile`` (random-init shapes), ``emodistill evaluate`` (trained
checkpoints), ``emodistill tune``, export and the benchmarks, so every latency in the
project is measured one way. On CUDA every timed call ends with a device synchronisation
(kernels are asynchronous: without it the clock would stop at the launch); on the CPU the
intra-op thread count is part of the result.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

from emodistill.exit_profile import DeviceInfo
from emodistill.model.early_exit import EarlyExitModel, count_parameters, exit_block


def check_device(device: str | None) -> str:
    """``cpu``, ``cuda`` or ``cuda:<n>``; a clear error when CUDA is asked for and absent."""
    device = str(device or "cpu").strip().lower()
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine (torch {torch.__version__})")
        return device
    raise ValueError(f"device {device!r} is not one of cpu, cuda, cuda:<n>")


def synchronizer(device: str | None) -> Callable[[], None]:
    """What ends a timed call on ``device``: ``torch.cuda.synchronize`` on CUDA, nothing on the CPU."""
    if str(device or "cpu").startswith("cuda"):
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def time_call(fn: Callable[[], object], warmup: int = 3, repeats: int = 20, device: str | None = None) -> dict[str, float]:
    """Run ``fn`` ``warmup`` times, then ``repeats`` timed times; milliseconds."""
    return time_interleaved({"fn": fn}, warmup, repeats, device)["fn"]


def time_interleaved(
    fns: dict[str, Callable[[], object]], warmup: int = 3, repeats: int = 20, device: str | None = None
) -> dict[str, dict[str, float]]:
    """Time several callables side by side: each round runs every one of them once, so
    slow drifts of the machine (frequency, other load) hit all of them alike and their
    ratios stay meaningful. Returns per name p50 / p95 / mean in milliseconds. With a CUDA
    ``device`` each call (warm-up included) is followed by a synchronisation inside the clock."""
    sync = synchronizer(device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
            sync()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append((time.perf_counter() - start) * 1000.0)
    return {name: _stats(values) for name, values in samples.items()}


def _stats(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "latency_ms_p50": statistics.median(values),
        "latency_ms_p95": values[min(len(values) - 1, round(0.95 * (len(values) - 1)))],
        "latency_ms_mean": statistics.fmean(values),
    }


@torch.inference_mode()
def profile_exits(
    model: EarlyExitModel,
    exits: Sequence[str] | None = None,
    seconds: float = 3.0,
    warmup: int = 3,
    repeats: int = 20,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Cut ``model`` at every exit and time each cut model on one clip of ``seconds`` on
    ``device`` (the model is moved there).

    Returns ``{"seconds", "threads", "device": DeviceInfo, "full": {params, latency_ms_p50,
    latency_ms_p95}, "conv_encoder": {...}, "exits": {"exit_<b>": {block, params,
    latency_ms_p50, latency_ms_p95}}}``.
    """
    device = check_device(device)
    model = model.to(device).eval()
    names = list(exits) if exits is not None else model.exit_names
    generator = torch.Generator().manual_seed(seed)
    clip = torch.randn(1, int(seconds * 16000), generator=generator).to(device)

    cuts = {name: model.cut(name).to(device).eval() for name in names}
    fns = {"full": lambda: model(clip), "conv_encoder": lambda: model.embed(clip, None)}
    fns.update({name: (lambda cut=cut: cut(clip)) for name, cut in cuts.items()})
    stats = time_interleaved(fns, warmup, repeats, device)
    return {
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "device": DeviceInfo.current(device).model_dump(),
        "full": {"params": count_parameters(model), **_p(stats["full"])},
        "conv_encoder": _p(stats["conv_encoder"]),
        "exits": {
            name: {"block": exit_block(name), "params": count_parameters(cut), **_p(stats[name])}
            for name, cut in cuts.items()
        },
    }


def _p(stats: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in stats.items() if k != "latency_ms_mean"}
