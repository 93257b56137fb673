"""Latency on the device that will answer, and the deepest exit that fits a budget.

Timing goes through ``evaluate.latency.time_interleaved`` (runtimes side by side, round
by round), so every latency in the project is measured one way. A runtime's call ends
with its logits copied to the host, so CUDA work is waited for.

Choosing an exit for a budget needs each exit's latency on *this* device:
``exit_profile.json`` when it was measured on the same device (``DeviceInfo.same_as``),
else a short measurement now. Latency does not depend on the weights, so the measurement
runs randomly initialised cut models and reads no weights at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emodistill.checkpoint import CheckpointConfig
from emodistill.evaluate.latency import time_interleaved
from emodistill.exit_profile import DeviceInfo, ExitProfile, FILE_NAME, read_profile
from emodistill.exits import sort_exits
from emodistill.inference.runtime import ExitRuntime, Precision, TorchRuntime
from emodistill.inference.weights import build_cut
from emodistill.storage import join

SAMPLE_RATE = 16000


def noise_clip(seconds: float, seed: int = 0) -> np.ndarray:
    """A fixed noise clip of ``seconds`` (latency does not depend on what is said)."""
    return (np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)


def time_runtimes(
    runtimes: Mapping[str, ExitRuntime], seconds: float = 3.0, warmup: int = 3, repeats: int = 20
) -> dict[str, dict[str, float]]:
    """{name: {"p50", "p95", "mean"}} ms of batch-1 calls on a ``seconds`` clip, interleaved."""
    clip = noise_clip(seconds)
    fns: dict[str, Callable[[], object]] = {name: (lambda rt=rt: rt.logits([clip])) for name, rt in runtimes.items()}
    stats = time_interleaved(fns, warmup, repeats)
    return {
        name: {"p50": round(s["latency_ms_p50"], 3), "p95": round(s["latency_ms_p95"], 3), "mean": round(s["latency_ms_mean"], 3)}
        for name, s in stats.items()
    }


@torch.inference_mode()
def measure_exits(
    config: CheckpointConfig,
    exits: Sequence[str] | None = None,
    device: str = "cpu",
    precision: Precision = "fp32",
    seconds: float = 3.0,
    warmup: int = 1,
    repeats: int = 5,
) -> dict[str, dict[str, float]]:
    """{exit: {"p50", "p95", "mean"}}: each exit's cut model timed on ``device`` (torch
    runtime at ``precision``), from random weights of the checkpoint's architecture."""
    names = sort_exits(exits or list(config.model.heads))
    model = build_cut(config, names).eval()  # blocks 1..deepest, the heads of `names`
    runtimes = {n: TorchRuntime(model, n, device=device, precision=precision) for n in names}
    return time_runtimes(runtimes, seconds, warmup, repeats)


def profile_latencies(
    profile: ExitProfile, seconds: float = 3.0, quantile: str = "p95"
) -> dict[str, float]:
    """{exit: ms} at ``seconds`` from an exit profile."""
    return {n: float(ms) for n, ms in profile.latency_at(seconds, quantile).items()}  # type: ignore[arg-type]


def find_profile(checkpoint: str) -> ExitProfile | None:
    """The checkpoint's ``exit_profile.json``: inside it, or in ``report/`` beside it
    (where ``emodistill evaluate`` writes it); None when there is none."""
    from emodistill.evaluate.report import default_out

    for where in (join(checkpoint, FILE_NAME), join(default_out(checkpoint), FILE_NAME)):
        try:
            return read_profile(where)
        except FileNotFoundError:
            continue
    return None


@dataclass
class ExitLatencies:
    """Each exit's latency on one device, and where the numbers come from."""

    latency_ms: dict[str, float]  # exit -> ms (p95 at `seconds`)
    seconds: float
    device: DeviceInfo
    source: str  # "exit_profile.json" or "measured now"


def exit_latencies(
    checkpoint: str,
    config: CheckpointConfig,
    device: str = "cpu",
    precision: Precision = "fp32",
    seconds: float = 3.0,
) -> ExitLatencies:
    """Latency of every exit on ``device``: from ``exit_profile.json`` when it was taken on
    this same device (and fp32, which is what evaluate times), else measured now."""
    here = DeviceInfo.current(device)
    profile = find_profile(checkpoint) if precision == "fp32" else None
    if profile is not None and profile.device.same_as(here) and set(config.model.heads) <= set(profile.exits):
        return ExitLatencies(profile_latencies(profile.only(list(config.model.heads)), seconds), seconds, here, FILE_NAME)
    measured = measure_exits(config, device=device, precision=precision, seconds=seconds)
    return ExitLatencies({n: s["p95"] for n, s in measured.items()}, seconds, here, "measured now")


@dataclass
class BudgetChoice:
    exit: str
    latency_ms: float


def choose_exit(latency_ms: Mapping[str, float], budget_ms: float, where: str = "") -> BudgetChoice:
    """The deepest exit whose latency is within ``budget_ms``; when none is, a ValueError
    naming the exit that came closest."""
    if not budget_ms > 0:
        raise ValueError(f"a latency budget must be a positive number of milliseconds, got {budget_ms}")
    fitting = [n for n in sort_exits(latency_ms) if latency_ms[n] <= budget_ms]
    if fitting:
        name = fitting[-1]
        return BudgetChoice(name, float(latency_ms[name]))
    closest = min(latency_ms, key=lambda n: latency_ms[n])
    raise ValueError(
        f"no exit meets {budget_ms:g} ms{where}: the closest is {closest} at {latency_ms[closest]:.1f} ms"
    )


__all__ = ["BudgetChoice", "ExitLatencies", "choose_exit", "exit_latencies", "find_profile", "measure_exits", "noise_clip", "time_runtimes"]
