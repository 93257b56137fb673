"""Which exit answers a request: pure functions of the profile, the budget and the load.

No Ray, no I/O; the router calls these with what it has observed.

- Expected latency of an exit for a clip = the profiled latency at that clip length
  (linear in clip seconds between the lengths ``emodistill evaluate`` measured) x the
  online correction (the replica's model time / profiled, smoothed: other hardware, other
  load) x (1 + requests already in flight at that exit / its capacity: the wait behind
  the queue) + the call overhead observed on top of the model time (transport, batching
  wait, smoothed).
- ``choose_exit``: the deepest exit that is up, not saturated and expected within budget.
  Nothing within budget: the shallowest usable exit, flagged ``degraded`` (``over_budget``).
  A deeper exit that would have met the budget but is saturated or down: the next one
  that can, flagged ``degraded`` (``saturated`` / ``unavailable``). The router also stops
  waiting for an exit once the budget left would no longer pay for the shallowest one
  (``call_timeout_ms``) and falls back (``timeout``): a replica that is restarting makes
  Serve queue the call rather than fail it.
- ``next_cascade_exit``: for tier ``auto``, the next deeper usable exit whose extra cost
  (its expected latency minus the current exit's, since the shallow blocks are reused)
  still fits the budget left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from emodistill.exit_profile import parse_profile

OVER_BUDGET = "over_budget"
SATURATED = "saturated"
UNAVAILABLE = "unavailable"
TIMEOUT = "timeout"  # the exit did not answer within the time the budget left it


@dataclass(frozen=True)
class ExitProfile:
    """What `emodistill evaluate` measured for one exit."""

    name: str
    block: int
    uar: float | None
    latency_ms: Mapping[float, float]  # clip seconds -> p50 ms (batch 1)

    def latency_at(self, seconds: float) -> float:
        """p50 at ``seconds``, linear between measured clip lengths, extended linearly
        beyond them (never below the shortest measured latency's share)."""
        points = sorted(self.latency_ms.items())
        if len(points) == 1:
            (s0, l0), = points
            return l0 * max(seconds, 1e-3) / s0 if s0 > 0 else l0
        if seconds <= points[0][0]:
            (s0, l0), (s1, l1) = points[0], points[1]
        elif seconds >= points[-1][0]:
            (s0, l0), (s1, l1) = points[-2], points[-1]
        else:
            i = next(i for i, (s, _) in enumerate(points) if s >= seconds)
            (s0, l0), (s1, l1) = points[i - 1], points[i]
        slope = (l1 - l0) / (s1 - s0) if s1 != s0 else 0.0
        return max(l0 + slope * (seconds - s0), 0.1 * points[0][1])


@dataclass(frozen=True)
class ExitLoad:
    """What the router currently knows about one exit's deployment."""

    in_flight: int = 0  # requests sent and not yet answered (this router)
    capacity: int = 16  # replicas x max_ongoing_requests
    correction: float = 1.0  # the replica's model time / profiled latency, smoothed
    overhead_ms: float = 0.0  # call time beyond the model time (transport, batch wait), smoothed
    available: bool = True  # False while it recently failed (down / refusing)

    @property
    def saturated(self) -> bool:
        return self.in_flight >= self.capacity


@dataclass(frozen=True)
class Decision:
    exit: str
    expected_ms: float
    degraded: bool = False
    reason: str | None = None  # over_budget | saturated | unavailable


class NoExitAvailable(RuntimeError):
    """Every exit is down or saturated: the caller should retry later (503)."""


def expected_ms(profile: ExitProfile, seconds: float, load: ExitLoad = ExitLoad()) -> float:
    service = profile.latency_at(seconds) * load.correction
    return service * (1.0 + load.in_flight / max(load.capacity, 1)) + load.overhead_ms


def choose_exit(
    profiles: Sequence[ExitProfile], loads: Mapping[str, ExitLoad], budget_ms: float, seconds: float
) -> Decision:
    """The deepest usable exit expected within ``budget_ms`` for a clip of ``seconds``."""
    ordered = sorted(profiles, key=lambda p: p.block, reverse=True)  # deepest first
    skipped: str | None = None
    usable: list[tuple[ExitProfile, float]] = []
    for p in ordered:
        load = loads.get(p.name, ExitLoad())
        cost = expected_ms(p, seconds, load)
        if not load.available or load.saturated:
            if cost <= budget_ms and skipped is None:
                skipped = UNAVAILABLE if not load.available else SATURATED
            continue
        usable.append((p, cost))
        if cost <= budget_ms:
            return Decision(p.name, cost, degraded=skipped is not None, reason=skipped)
    if not usable:
        raise NoExitAvailable(f"all exits are down or saturated: {[p.name for p in ordered]}")
    shallowest, cost = usable[-1]
    return Decision(shallowest.name, cost, degraded=True, reason=skipped or OVER_BUDGET)


def call_timeout_ms(
    fallback: ExitProfile | None, decision: Decision, budget_left_ms: float, seconds: float
) -> float | None:
    """How long to wait for ``decision.exit`` before falling back to ``fallback`` (a
    shallower usable exit): the budget left minus what the fallback needs, but at least
    twice the exit's own expected latency. No fallback: wait (a late answer beats none)."""
    if fallback is None:
        return None
    return max(budget_left_ms - fallback.latency_at(seconds), 2.0 * decision.expected_ms, 1.0)


def next_cascade_exit(
    profiles: Sequence[ExitProfile],
    loads: Mapping[str, ExitLoad],
    current: ExitProfile | None,
    elapsed_ms: float,
    budget_ms: float,
    seconds: float,
    reuse: bool = True,
) -> Decision | None:
    """The next exit of the cascade after ``current`` (None: the first), or None to stop.

    The first step takes the shallowest usable exit even when it alone exceeds the budget
    (an answer is better than none; it is then flagged ``over_budget``).
    """
    ordered = sorted(profiles, key=lambda p: p.block)
    deeper = [p for p in ordered if current is None or p.block > current.block]
    left = budget_ms - elapsed_ms
    for p in deeper:
        load = loads.get(p.name, ExitLoad())
        if not load.available or load.saturated:
            continue
        cost = expected_ms(p, seconds, load)
        if current is not None and reuse:
            cost = max(cost - current.latency_at(seconds) * load.correction, 0.0)
        if cost <= left:
            return Decision(p.name, cost)
        if current is None:
            return Decision(p.name, cost, degraded=True, reason=OVER_BUDGET)
        return None  # the next usable exit does not fit; deeper ones cost more
    if current is None:
        raise NoExitAvailable(f"all exits are down or saturated: {[p.name for p in ordered]}")
    return None


@dataclass
class ProfileSet:
    """The router's view of ``exit_profile.json``: per exit, block, UAR and latency."""

    exits: list[ExitProfile]
    model: dict = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    hardware: dict = field(default_factory=dict)

    def get(self, name: str) -> ExitProfile:
        for p in self.exits:
            if p.name == name:
                return p
        raise KeyError(name)

    def with_latency(self, name: str, latency_ms: Mapping[float, float]) -> ProfileSet:
        """This set with ``name``'s latencies (clip seconds -> p50 ms) replaced: what a
        replica measured at start-up on a device other than the profile's."""
        from dataclasses import replace

        self.get(name)
        exits = [replace(p, latency_ms=dict(latency_ms)) if p.name == name else p for p in self.exits]
        return replace(self, exits=exits)

    @classmethod
    def from_json(cls, text: str | bytes, only: Sequence[str] | None = None) -> ProfileSet:
        """Parse ``exit_profile.json`` through its owner (``emodistill.exit_profile``)."""
        doc = parse_profile(text)
        if only is not None:
            doc = doc.only(only)
        exits = [
            ExitProfile(name=n, block=e.block, uar=e.uar, latency_ms={s: v for s, v in e.points("p50")})
            for n, e in doc.exits.items()
        ]
        return cls(exits=exits, model=dict(doc.model), labels=list(doc.labels), hardware=doc.device.model_dump())
