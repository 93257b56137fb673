"""``exit_profile.json``: what each exit costs on one device, and how accurate it is.

The one owner of that file. ``emodistill evaluate`` measures and writes it (beside the
checkpoint, in ``report/``); serving (the router's latency planning), tuning (exit
latencies of an objective) and export (the model card) read it through :func:`read_profile`.
Nobody else parses the JSON.

    {"format": "emodistill-exit-profile", "version": 2,
     "model":  {"name", "version", "checkpoint"},
     "labels": [...], "sample_rate": 16000,
     "device": {"kind": "cpu"|"cuda", "name", "threads", "torch"},
     "exits":  {"exit_3": {"block": 3, "uar": 0.71,
                           "latency_ms": {"1": {"p50": 8.1, "p95": 9.0}, "3": {...}}}}}

Latency is batch 1 of the cut model (conv encoder + blocks 1..b + the exit's head), per
clip length in seconds. Version 1 files (``hardware`` instead of ``device``) still load.
"""

from __future__ import annotations

import json
import platform as _platform
from collections.abc import Mapping, Sequence
from functools import lru_cache
from statistics import NormalDist
from typing import Literal

from pydantic import Field, field_validator, model_validator

from emodistill.config import Config
from emodistill.exits import exit_block, is_exit_name, sort_exits
from emodistill.storage import S3Options, get_fs, join, write_bytes_atomic

FORMAT = "emodistill-exit-profile"
VERSION = 2
FILE_NAME = "exit_profile.json"

Quantile = Literal["p50", "p95"]


class LatencyStats(Config):
    """Latency of one cut model at one clip length, ms."""

    p50: float = Field(gt=0, description="Median of the timed runs, ms.")
    p95: float = Field(gt=0, description="95th percentile of the timed runs, ms (planning uses it by default).")

    @model_validator(mode="after")
    def _order(self) -> LatencyStats:
        if self.p95 < self.p50:
            raise ValueError(f"p95 ({self.p95}) is below p50 ({self.p50})")
        return self


class DeviceInfo(Config):
    """Where the latencies were measured."""

    kind: Literal["cpu", "cuda"] = Field("cpu", description="Device type the cut models ran on.")
    name: str = Field("", description="CPU model or GPU name.")
    threads: int | None = Field(None, description="torch intra-op threads while timing (CPU).")
    torch: str = Field("", description="torch version.")

    def same_as(self, other: DeviceInfo) -> bool:
        """True when numbers measured on ``other`` hold here (same kind, name and threads)."""
        return (self.kind, self.name, self.threads) == (other.kind, other.name, other.threads)

    def describe(self) -> str:
        """One line for people: ``cpu, AMD EPYC 9454 (2 threads)`` / ``cuda, NVIDIA H100``."""
        text = f"{self.kind}, {self.name or 'unknown'}"
        return f"{text} ({self.threads} threads)" if self.kind == "cpu" and self.threads else text

    @classmethod
    def current(cls, device: str = "cpu") -> DeviceInfo:
        """This process' device (``device``: ``cpu`` or ``cuda[:n]``)."""
        import torch

        if device.startswith("cuda"):
            index = torch.device(device).index or 0
            return cls(kind="cuda", name=torch.cuda.get_device_name(index), threads=None, torch=torch.__version__)
        name = _platform.processor() or _platform.machine()
        try:  # a readable CPU name on Linux (platform.processor() is often empty there)
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        return cls(kind="cpu", name=name, threads=torch.get_num_threads(), torch=torch.__version__)


class ExitEntry(Config):
    """One exit: its block, its held-out UAR and its latency by clip length."""

    block: int = Field(ge=1, description="Transformer block the exit reads (exit_<block>).")
    uar: float | None = Field(None, description="UAR on the evaluated (held-out) clips; None if not measured.")
    latency_ms: dict[str, LatencyStats] = Field(
        description="Clip length in seconds (as text, e.g. '3') -> latency of the cut model at batch 1."
    )

    @field_validator("latency_ms")
    @classmethod
    def _lengths(cls, value: dict[str, LatencyStats]) -> dict[str, LatencyStats]:
        if not value:
            raise ValueError("no latency measurements")
        for key in value:
            if not float(key) > 0:
                raise ValueError(f"clip length {key!r} must be a positive number of seconds")
        return dict(sorted(value.items(), key=lambda kv: float(kv[0])))

    def points(self, quantile: Quantile = "p95") -> list[tuple[float, float]]:
        """[(clip seconds, ms)] in increasing clip length."""
        return [(float(s), getattr(v, quantile)) for s, v in self.latency_ms.items()]

    def latency_at(self, seconds: float, quantile: Quantile = "p95") -> float:
        """Latency at ``seconds``: linear between measured lengths, extended linearly beyond
        them, never below a tenth of the shortest measured latency."""
        points = self.points(quantile)
        if len(points) == 1:
            (s0, l0), = points
            return max(l0 * seconds / s0, 0.1 * l0)
        if seconds <= points[0][0]:
            (s0, l0), (s1, l1) = points[0], points[1]
        elif seconds >= points[-1][0]:
            (s0, l0), (s1, l1) = points[-2], points[-1]
        else:
            i = next(i for i, (s, _) in enumerate(points) if s >= seconds)
            (s0, l0), (s1, l1) = points[i - 1], points[i]
        slope = (l1 - l0) / (s1 - s0) if s1 != s0 else 0.0
        return max(l0 + slope * (seconds - s0), 0.1 * points[0][1])

    def latency_quantile(self, seconds: float, q: float) -> float:
        """Latency at ``seconds`` at any quantile ``q`` in [0.5, 0.999]: p50 plus the p95 - p50
        spread scaled by the normal quantile ratio z(q) / z(0.95) (q = 0.95 gives p95, 0.99
        about p50 + 1.41 x (p95 - p50)). Planning on p99 from a file that holds p50 and p95."""
        if not 0.5 <= q <= 0.999:
            raise ValueError(f"quantile {q} is outside [0.5, 0.999]")
        p50, p95 = self.latency_at(seconds, "p50"), self.latency_at(seconds, "p95")
        return p50 + (p95 - p50) * _z(q) / _z(0.95)


@lru_cache(maxsize=64)
def _z(q: float) -> float:
    """The standard normal quantile (the spread of a tail quantile relative to p95's)."""
    return NormalDist().inv_cdf(q)


class ExitProfile(Config):
    """The contents of ``exit_profile.json``."""

    format: Literal["emodistill-exit-profile"] = Field(FORMAT, description="Marks an exit profile.")
    version: int = Field(VERSION, description="Format version of this file.")
    model: dict[str, str | None] = Field(
        default_factory=dict, description="name, version (weights hash) and checkpoint the profile was measured on."
    )
    labels: list[str] = Field(default_factory=list, description="Class labels in logit order.")
    sample_rate: int = Field(16000, description="Sample rate of the timed clips, Hz.")
    device: DeviceInfo = Field(default_factory=DeviceInfo, description="Where the latencies were measured.")
    exits: dict[str, ExitEntry] = Field(description="exit_<block> -> block, UAR and latency by clip length.")

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, raw):
        """Version 1 (no format marker, ``hardware`` instead of ``device``) -> version 2."""
        if isinstance(raw, dict) and "format" not in raw:
            raw = dict(raw)
            hardware = raw.pop("hardware", {}) or {}
            raw.setdefault(
                "device",
                {"kind": "cpu", "name": hardware.get("processor") or hardware.get("machine") or "",
                 "threads": hardware.get("torch_threads"), "torch": ""},
            )
            raw["format"], raw["version"] = FORMAT, VERSION
        return raw

    @field_validator("exits")
    @classmethod
    def _exits(cls, value: dict[str, ExitEntry]) -> dict[str, ExitEntry]:
        if not value:
            raise ValueError("the profile lists no exits")
        for name, entry in value.items():
            if not is_exit_name(name) or exit_block(name) != entry.block:
                raise ValueError(f"exit {name!r} does not match its block {entry.block}")
        return {n: value[n] for n in sort_exits(value)}

    @property
    def exit_names(self) -> list[str]:
        return list(self.exits)

    def only(self, names: Sequence[str]) -> ExitProfile:
        """The profile restricted to ``names``; a clear error naming what is missing."""
        missing = sorted(set(names) - set(self.exits), key=exit_block)
        if missing:
            raise ValueError(
                f"{FILE_NAME} has no profile for {missing} (it has {self.exit_names}); "
                "re-run `emodistill evaluate` on this checkpoint"
            )
        return self.model_copy(update={"exits": {n: e for n, e in self.exits.items() if n in set(names)}})

    def with_latency(self, name: str, latency_ms: Mapping[str, LatencyStats | Mapping[str, float]]) -> ExitProfile:
        """This profile with ``name``'s latencies (clip seconds as text -> p50/p95 ms)
        replaced: what a serve replica measured at start-up where the profile's numbers do
        not hold (another device, thread count or runtime)."""
        if name not in self.exits:
            raise KeyError(name)
        old = self.exits[name]
        latency = {f"{float(s):g}": LatencyStats.model_validate(v) for s, v in latency_ms.items()}
        entry = ExitEntry(block=old.block, uar=old.uar, latency_ms=latency)
        return self.model_copy(update={"exits": {**self.exits, name: entry}})

    def latency_at(self, seconds: float, quantile: Quantile = "p95") -> dict[str, float]:
        """{exit: ms} at one clip length."""
        return {n: e.latency_at(seconds, quantile) for n, e in self.exits.items()}

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)


def parse_profile(text: str | bytes) -> ExitProfile:
    """An ``exit_profile.json``'s text -> :class:`ExitProfile` (ValueError when malformed)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{FILE_NAME} is not JSON: {err}") from err
    return ExitProfile.model_validate(raw)


def read_profile(uri: str, s3: S3Options | None = None) -> ExitProfile:
    """Read ``exit_profile.json`` (a file, or a directory holding it; local or ``s3://``)."""
    fs, path = get_fs(uri, s3)
    if not path.endswith(".json"):
        path = join(path, FILE_NAME)
    try:
        with fs.open(path, "rb") as fh:
            return parse_profile(fh.read())
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"no exit profile at {uri}: run `emodistill evaluate CHECKPOINT DATASET` first "
            "(it writes report/exit_profile.json beside the checkpoint)"
        ) from err


def write_profile(uri: str, profile: ExitProfile, s3: S3Options | None = None) -> str:
    """Write ``profile`` to ``uri`` (a ``.json`` path or a directory) atomically; returns the path."""
    fs, path = get_fs(uri, s3)
    if not path.endswith(".json"):
        fs.makedirs(path, exist_ok=True)
        path = join(path, FILE_NAME)
    write_bytes_atomic(fs, path, profile.to_json().encode())
    return path


def make_profile(
    *,
    model: Mapping[str, str | None],
    labels: Sequence[str],
    device: DeviceInfo,
    uar: Mapping[str, float | None],
    latency: Mapping[str, Mapping[str, Mapping[str, float]]],
    sample_rate: int = 16000,
) -> ExitProfile:
    """Build a profile from per-exit UAR and ``{exit: {"<seconds>": {"p50", "p95"}}}``."""
    return ExitProfile(
        model=dict(model),
        labels=list(labels),
        sample_rate=sample_rate,
        device=device,
        exits={
            n: ExitEntry(block=exit_block(n), uar=uar.get(n), latency_ms={s: LatencyStats(**v) for s, v in per.items()})
            for n, per in latency.items()
        },
    )


__all__ = [
    "FILE_NAME",
    "DeviceInfo",
    "ExitEntry",
    "ExitProfile",
    "LatencyStats",
    "Quantile",
    "make_profile",
    "parse_profile",
    "read_profile",
    "write_profile",
]
