"""Latency of cut models: batch 1, warm-up, then percentiles over repeated runs.

Used by ``emodistill profile`` (random-init shapes), ``emodistill evaluate`` (trained
checkpoints) and the benchmarks, so every latency in the project is measured one way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

from emodistill.model.early_exit import EarlyExitModel, count_parameters, exit_block


def time_call(fn: Callable[[], object], warmup: int = 3, repeats: int = 20) -> dict[str, float]:
    """Run ``fn`` ``warmup`` times, then ``repeats`` timed times; milliseconds."""
    return time_interleaved({"fn": fn}, warmup, repeats)["fn"]


def time_interleaved(
    fns: dict[str, Callable[[], object]], warmup: int = 3, repeats: int = 20
) -> dict[str, dict[str, float]]:
    """Time several callables side by side: each round runs every one of them once, so
    slow drifts of the machine (frequency, other load) hit all of them alike and their
    ratios stay meaningful. Returns per name p50 / p95 / mean in milliseconds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
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
) -> dict:
    """Cut ``model`` at every exit and time each cut model on one clip of ``seconds``.

    Returns ``{"full": {params, latency_ms_p50, latency_ms_p95}, "conv_encoder": {...},
    "exits": {"exit_<b>": {block, params, latency_ms_p50, latency_ms_p95}}}``.
    """
    model = model.eval()
    names = list(exits) if exits is not None else model.exit_names
    generator = torch.Generator().manual_seed(seed)
    clip = torch.randn(1, int(seconds * 16000), generator=generator)

    cuts = {name: model.cut(name).eval() for name in names}
    fns = {"full": lambda: model(clip), "conv_encoder": lambda: model.embed(clip, None)}
    fns.update({name: (lambda cut=cut: cut(clip)) for name, cut in cuts.items()})
    stats = time_interleaved(fns, warmup, repeats)
    return {
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "full": {"params": count_parameters(model), **_p(stats["full"])},
        "conv_encoder": _p(stats["conv_encoder"]),
        "exits": {
            name: {"block": exit_block(name), "params": count_parameters(cut), **_p(stats[name])}
            for name, cut in cuts.items()
        },
    }


def _p(stats: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in stats.items() if k != "latency_ms_mean"}
