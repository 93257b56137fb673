"""Which exit answers a request, and the load state it reasons about. No Ray, no I/O.

:class:`LoadState` is the router's whole picture of its exits. The router tells it what
happens (a call sent, answered, given up on, failed; what a replica reported about its
queue) and asks it what to do: the deepest exit expected within the time left
(:meth:`~LoadState.choose`), the next step of a cascade, whether a block output is worth
shipping, which exits to probe. Time is passed in (``now``: seconds on the caller's
monotonic clock), so every rule is tested without Ray and without sleeping.

Expected latency of exit ``e`` for a clip of ``s`` seconds, at the planning quantile
``q`` (0.95 by default)::

    expected(e, s) = overhead + (ahead + 1) x cost(e) x p50(e, s)

each part with a median and a q-value; the result is the medians' sum plus the tails
(q-value - median) added in quadrature, as independent delays add (three p95s on top of
each other would plan on something far rarer than a p95).

- ``p50(e, s)``: the profile's batch-1 latency at the clip's length
  (``emodistill.exit_profile``).
- ``cost(e)``: what one clip costs the replica now, as a multiple of its profiled p50:
  each answer reports its batch's model time, clip count and padded length, so
  ``cost = model time / (clips x p50(padded length))`` (above 1 when the replica is slower
  than profiled or shares its cores, below 1 when batching pays). Observations decay
  (weights halve every ``half_life_s``) against the profile as prior (median 1, its q /
  p50 spread as tail; worth ``prior_weight`` fresh observations), so an exit no longer
  observed drifts back to its profile. The q-value is the observations' own q-quantile
  once they are enough to show one (20 recent ones for p95); before that their median x
  the profile's spread, so one odd answer among few moves nothing.
- ``ahead``: requests ahead of this one at one replica: the larger of what this router
  has in flight there and what the replicas last reported (each answer carries its
  replica's queue depth), over the replicas heard from recently (at least as many as
  configured): right with several routers, and as replicas come and go. Each costs one
  clip's ``cost``, whether it ends up in an earlier batch or in this one's: queue wait is
  counted once, as work ahead, not again inside the model time.
- ``overhead``: call time minus queue wait minus model time (transport, serialisation),
  observed; prior: what other exits show, else ``prior_overhead_ms``.

Pressure: when requests are being missed (refused for load, answered late, calls given
up on), the headroom shrinks (x0.8 per miss, down to ``min_headroom``; it recovers over
``recover_s``): a deep exit must then be expected within that share of the time left,
else the soonest exit that fits answers. Depth is shed before requests are (more answers
per second from shallower exits), and the slack absorbs estimates that run late, e.g.
when exits share cores and one's work slows the others.

Outlier detection (Envoy's): an exit that fails ``eject_after_failures`` calls in a row is
ejected for ``cooldown_s`` (doubling with each ejection in a row, up to
``max_cooldown_s``), then comes back on probation: one call at a time until one
succeeds. One failure only excludes the exit for the request that saw it. A call given up
on for time is no failure: it says the exit took at least that long, which raises its
estimate until newer answers or decay bring it down again.

Probing: an exit this router has heard nothing from for ``probe_interval_s`` is due for a
probe (:meth:`~LoadState.take_probes`; the router sends a short synthetic clip), so no
exit is shunned for good on old numbers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from emodistill.exit_profile import ExitEntry, ExitProfile
from emodistill.exits import exit_block, sort_exits

# why an answer comes from a shallower exit than planned, or why none came
OVER_BUDGET = "over_budget"  # nothing was expected within budget; the fastest answered anyway
UNAVAILABLE = "unavailable"  # a deeper exit that would fit is ejected, dead or refusing
SATURATED = "saturated"  # a deeper exit's deployment refused the call (its queue is full)
TIMEOUT = "timeout"  # the exit did not answer before the router gave up on it
ERROR = "error"  # the exit raised
EXPIRED = "expired"  # the exit dropped the call: its deadline had passed before compute
LOAD = "load"  # a deeper exit would fit, but the router is shedding depth: requests are being missed

# why a cascade stopped
CONFIDENT = "confident"  # margin reached the threshold
BUDGET = "budget"  # a deeper exit exists and is usable but is not expected within the time left
DEEPEST = "deepest"  # no deeper exit is deployed
NO_DEEPER = "unavailable"  # deeper exits exist but none is usable now

UP, DOWN, PROBATION = "up", "down", "probation"


@dataclass(frozen=True)
class PolicyConfig:
    """The knobs of :class:`LoadState` (``ServeArgs.policy_config()`` fills them)."""

    quantile: float = 0.95  # plan on this latency quantile
    half_life_s: float = 10.0  # an observation this old counts half
    prior_weight: float = 1.0  # the profile counts as this many fresh observations
    window: int = 64  # observations kept per exit and kind
    prior_overhead_ms: float = 2.0  # call overhead before any is observed
    report_ttl_s: float = 2.0  # a replica's reported queue depth counts this long
    replica_ttl_s: float = 30.0  # a replica not heard from this long is no longer counted
    probe_interval_s: float | None = 5.0  # probe an exit not heard from this long (None: never)
    min_headroom: float = 0.3  # under pressure, deep exits must fit this share of the time left
    recover_s: float = 10.0  # from min_headroom back to 1 without new misses
    eject_after_failures: int = 3  # failures in a row that eject an exit
    cooldown_s: float = 5.0  # first ejection's length
    max_cooldown_s: float = 60.0  # longest ejection


@dataclass(frozen=True)
class Estimate:
    """Expected latency of one call, ms, and its parts."""

    exit: str
    total_ms: float
    service_ms: float
    wait_ms: float
    overhead_ms: float
    ahead: float  # requests ahead at one replica


@dataclass(frozen=True)
class Decision:
    exit: str
    expected_ms: float
    degraded: bool = False
    reason: str | None = None  # over_budget | unavailable | saturated | timeout | error | expired


class NoExitFits(RuntimeError):
    """No usable exit is expected within the time left (or none is usable at all)."""

    def __init__(self, message: str, fastest: Decision | None, usable: bool, load: bool = False):
        super().__init__(message)
        self.fastest = fastest  # the usable exit expected soonest, flagged over_budget; None if none is usable
        self.usable = usable  # False: every exit is ejected or excluded
        self.load = load  # True: an idle exit would have fitted (load is the cause, not the clip)


@dataclass
class Ticket:
    """One call in flight, from :meth:`LoadState.sent` to its outcome."""

    exit: str
    sent: float
    seconds: float
    ahead: float
    resumed: bool = False
    probe: bool = False
    closed: bool = False


class Samples:
    """Recent observations, weighted by age (halving every ``half_life_s``), bounded.

    The age weights and the sort are refreshed when a value is added or ``refresh_s``
    has passed (weights change by ~3% in half a second at a 10 s half-life), so asking for
    a tail on every request costs a scan, not a sort."""

    refresh_s = 0.5

    def __init__(self, size: int):
        self.items: deque[tuple[float, float]] = deque(maxlen=size)  # (time, value)
        self._points: list[tuple[float, float]] = []  # (value, weight), sorted by value
        self._total = 0.0
        self._stamp: tuple[float, float] | None = None  # (now, half_life_s) of the last refresh

    def add(self, now: float, value: float) -> None:
        self.items.append((now, value))
        self._stamp = None

    def __len__(self) -> int:
        return len(self.items)

    def _refresh(self, now: float, half_life_s: float) -> None:
        stamp = self._stamp
        if stamp is not None and stamp[1] == half_life_s and 0.0 <= now - stamp[0] < self.refresh_s:
            return
        self._points = sorted((v, 0.5 ** (max(now - t, 0.0) / half_life_s)) for t, v in self.items)
        self._total = sum(w for _, w in self._points)
        self._stamp = (now, half_life_s)

    def weight(self, now: float, half_life_s: float) -> float:
        self._refresh(now, half_life_s)
        return self._total

    def tail(self, q: float, now: float, half_life_s: float, prior: float, prior_weight: float, spread: float = 1.0) -> float:
        """The q-quantile of recent values, with ``prior`` as the typical value before
        (and beside) them, ``spread`` the prior's q-value / typical value.

        Once the recent observations weigh enough to show a q-tail (1 / (1 - q): 20 for
        p95) it is their weighted q-quantile, the prior (x spread) among them; before that,
        their weighted median with the prior, x spread: one odd value among few moves
        nothing, two in a row do."""
        self._refresh(now, half_life_s)
        if self._total >= 1.0 / (1.0 - q):
            return _quantile_with(self._points, self._total, prior * spread, prior_weight, q)
        return _quantile_with(self._points, self._total, prior, prior_weight, 0.5) * spread


def _quantile_with(points: list[tuple[float, float]], total: float, extra: float, extra_weight: float, q: float) -> float:
    """Weighted q-quantile of sorted ``points`` plus one more point (``extra``)."""
    target, acc, pending = q * (total + extra_weight), 0.0, True
    for value, weight in points:
        if pending and extra <= value:
            acc += extra_weight
            pending = False
            if acc >= target - 1e-12:
                return extra
        acc += weight
        if acc >= target - 1e-12:
            return value
    return extra if pending else points[-1][0]


def weighted_quantile(points: list[tuple[float, float]], q: float) -> float:
    """The smallest value whose cumulative weight reaches ``q`` of the total; [(value, weight)]."""
    points = sorted(points)
    target, acc = q * sum(w for _, w in points), 0.0
    for value, weight in points:
        acc += weight
        if acc >= target - 1e-12:
            return value
    return points[-1][0]


@dataclass
class _Exit:
    name: str
    block: int
    entry: ExitEntry
    replicas: int  # configured (autoscaling: the minimum)
    cost: Samples  # model time per clip / profile p50 at the batch's padded length
    overhead: Samples  # ms
    in_flight: int = 0
    reports: dict[str, tuple[float, int]] = field(default_factory=dict)  # replica -> (time, depth)
    failures: int = 0  # in a row
    ejections: int = 0  # in a row
    ejected_until: float = -math.inf
    probation: bool = False
    last_heard: float = 0.0


class LoadState:
    """The router's view of its exits: latency estimates, load, failures (see module doc)."""

    def __init__(
        self,
        profile: ExitProfile,
        config: PolicyConfig = PolicyConfig(),
        replicas: Mapping[str, int] | None = None,
        now: float = 0.0,
    ):
        self.config = config
        self.profile = profile
        replicas = dict(replicas or {})
        self._profile_cache: dict[tuple[str, float], tuple[float, float]] = {}
        self._headroom, self._headroom_at = 1.0, now
        self.exits: dict[str, _Exit] = {
            name: _Exit(
                name=name,
                block=exit_block(name),
                entry=profile.exits[name],
                replicas=max(1, replicas.get(name, 1)),
                cost=Samples(config.window),
                overhead=Samples(config.window),
                last_heard=now,
            )
            for name in sort_exits(profile.exits)
        }

    @property
    def names(self) -> list[str]:
        """Exit names, shallowest first."""
        return list(self.exits)

    # ---- estimates ---------------------------------------------------------------------
    def _profiled(self, name: str, seconds: float) -> tuple[float, float]:
        """(p50, q-latency / p50) of the profile at ``seconds`` (cached per ms of clip)."""
        key = (name, round(seconds, 3))
        hit = self._profile_cache.get(key)
        if hit is None:
            entry = self.exits[name].entry
            p50 = max(entry.latency_at(seconds, "p50"), 1e-3)
            hit = (p50, entry.latency_quantile(seconds, self.config.quantile) / p50)
            if len(self._profile_cache) > 4096:
                self._profile_cache.clear()
            self._profile_cache[key] = hit
        return hit

    def p50(self, name: str, seconds: float) -> float:
        return self._profiled(name, seconds)[0]

    def cost(self, name: str, seconds: float, now: float, q: float | None = None) -> float:
        """One clip's model time now as a multiple of the profiled p50, at quantile ``q``
        (default: the planning quantile); the prior is 1 with the profile's q / p50 spread."""
        e, c = self.exits[name], self.config
        q = c.quantile if q is None else q
        spread = 1.0 if q == 0.5 else self._profiled(name, seconds)[1]
        return e.cost.tail(q, now, c.half_life_s, 1.0, c.prior_weight, spread)

    def service_ms(self, name: str, seconds: float, now: float, q: float | None = None) -> float:
        """Model time of one clip of ``seconds`` at quantile ``q`` (default: the planning one)."""
        return self.p50(name, seconds) * self.cost(name, seconds, now, q)

    def overhead_ms(self, name: str, now: float, q: float | None = None) -> float:
        e, c = self.exits[name], self.config
        q = c.quantile if q is None else q
        prior = c.prior_overhead_ms
        if not len(e.overhead):  # same transport for every exit: borrow what the others show
            seen = [x.overhead.tail(q, now, c.half_life_s, prior, c.prior_weight)
                    for x in self.exits.values() if len(x.overhead)]
            prior = sum(seen) / len(seen) if seen else prior
        return e.overhead.tail(q, now, c.half_life_s, prior, c.prior_weight)

    def ahead(self, name: str, now: float) -> float:
        """Requests ahead of a new one at one replica of ``name``."""
        e, c = self.exits[name], self.config
        reported = sum(d for t, d in e.reports.values() if now - t <= c.report_ttl_s)
        seen = sum(1 for t, _ in e.reports.values() if now - t <= c.replica_ttl_s)
        return max(e.in_flight, reported) / max(e.replicas, seen, 1)

    def wait_ms(self, name: str, seconds: float, now: float, ahead: float | None = None, q: float | None = None) -> float:
        """Queue wait: the work of the requests ahead, one clip's cost each."""
        ahead = self.ahead(name, now) if ahead is None else ahead
        return ahead * self.service_ms(name, seconds, now, q) if ahead > 0 else 0.0

    def estimate(self, name: str, seconds: float, now: float) -> Estimate:
        """Expected latency at the planning quantile: medians plus tails in quadrature (the
        queue's tail grows with the square root of the requests in it)."""
        ahead = self.ahead(name, now)
        service, service_m = self.service_ms(name, seconds, now), self.service_ms(name, seconds, now, 0.5)
        overhead, overhead_m = self.overhead_ms(name, now), self.overhead_ms(name, now, 0.5)
        spread = max(service - service_m, 0.0)
        tail = math.sqrt((1.0 + ahead) * spread * spread + max(overhead - overhead_m, 0.0) ** 2)
        total = overhead_m + (1.0 + ahead) * service_m + tail
        return Estimate(name, total, service, ahead * service, overhead, ahead)

    def resume_estimate(self, current: str, name: str, seconds: float, now: float) -> Estimate:
        """Continuing from ``current``'s block output: only the blocks in between are paid."""
        full = self.estimate(name, seconds, now)
        saved = min(self.service_ms(current, seconds, now), 0.9 * full.service_ms)
        return Estimate(name, full.total_ms - saved, full.service_ms - saved, full.wait_ms, full.overhead_ms, full.ahead)

    # ---- availability ------------------------------------------------------------------
    def state(self, name: str, now: float) -> str:
        e = self.exits[name]
        if now < e.ejected_until:
            return DOWN
        return PROBATION if e.probation else UP

    def usable(self, name: str, now: float) -> bool:
        """Not ejected, and not on probation with its one trial call in flight."""
        state = self.state(name, now)
        return state == UP or (state == PROBATION and self.exits[name].in_flight == 0)

    # ---- decisions ---------------------------------------------------------------------
    def choose(self, seconds: float, left_ms: float, now: float, exclude: Mapping[str, str] | None = None) -> Decision:
        """The deepest usable exit expected within ``left_ms`` x the headroom (raises
        :class:`NoExitFits` when none is expected within ``left_ms``).

        Under pressure (:meth:`missed`) the headroom shrinks: a deep exit must then fit a
        share of the time left, else the soonest exit that fits answers (``degraded:
        load``): depth is shed before requests are, and the slack absorbs estimates
        that run late. ``exclude``: exits this request already tried -> why they
        failed it; a deeper exit that would have fitted but is excluded or ejected makes
        the answer ``degraded`` with that reason."""
        exclude = exclude or {}
        headroom = self.headroom(now)
        skipped: str | None = None
        usable: list[Estimate] = []
        for name in reversed(self.names):  # deepest first
            if name in exclude or not self.usable(name, now):
                if skipped is None and self.service_ms(name, seconds, now) <= left_ms:
                    skipped = exclude.get(name, UNAVAILABLE)
                continue
            est = self.estimate(name, seconds, now)
            if est.total_ms <= left_ms * headroom:
                shed = any(u.total_ms <= left_ms for u in usable)  # a deeper one fits, but not the headroom
                reason = skipped or (LOAD if shed else None)
                return Decision(name, est.total_ms, degraded=reason is not None, reason=reason)
            usable.append(est)
        fits = [e for e in usable if e.total_ms <= left_ms]
        if fits:  # only under pressure: the soonest exit that fits
            soonest = min(fits, key=lambda e: e.total_ms)
            reason = skipped or (LOAD if fits[0].exit != soonest.exit else None)
            return Decision(soonest.exit, soonest.total_ms, degraded=reason is not None, reason=reason)
        raise self._no_fit(usable, seconds, left_ms)

    def _no_fit(self, usable: list[Estimate], seconds: float, left_ms: float) -> NoExitFits:
        if not usable:
            return NoExitFits(f"no exit can take the request: {self.names} are down or already failed it", None, False)
        fastest = min(usable, key=lambda e: e.total_ms)
        idle = min(self._profiled(e.exit, seconds)[0] * self._profiled(e.exit, seconds)[1] for e in usable)
        load = idle + self.config.prior_overhead_ms <= left_ms
        return NoExitFits(
            f"no exit is expected to answer within the {max(left_ms, 0):.0f} ms left "
            f"(soonest: {fastest.exit} in ~{fastest.total_ms:.0f} ms for a {seconds:.1f} s clip, "
            f"given {'the load' if load else 'the clip length'})",
            Decision(fastest.exit, fastest.total_ms, degraded=True, reason=OVER_BUDGET),
            True,
            load,
        )

    # ---- pressure ----------------------------------------------------------------------
    def headroom(self, now: float) -> float:
        """Share of the time left a deep exit must fit: 1 when nothing is being missed,
        down to ``min_headroom`` under pressure, recovering linearly over ``recover_s``."""
        c = self.config
        return min(1.0, self._headroom + max(now - self._headroom_at, 0.0) * (1.0 - c.min_headroom) / c.recover_s)

    def missed(self, now: float) -> None:
        """A request was refused for load, answered late, or its exit call given up on."""
        self._headroom = max(self.config.min_headroom, 0.8 * self.headroom(now))
        self._headroom_at = now

    def cascade_next(
        self,
        current: str | None,
        seconds: float,
        left_ms: float,
        now: float,
        exclude: Mapping[str, str] | None = None,
        reuse: bool = True,
    ) -> tuple[Decision | None, str | None]:
        """The next cascade step after ``current`` (None: the first) and, when there is
        none, why the cascade stops (``budget``, ``deepest``, ``unavailable``).

        The first step is the shallowest usable exit expected within ``left_ms`` (raises
        :class:`NoExitFits` when none is); later steps resume from ``current``'s block
        output (``reuse``; else from the waveform), so only the blocks in between count."""
        exclude = exclude or {}
        if current is None:
            usable = []
            for name in self.names:  # shallowest first
                if name in exclude or not self.usable(name, now):
                    continue
                est = self.estimate(name, seconds, now)
                if est.total_ms <= left_ms:
                    return Decision(name, est.total_ms), None
                usable.append(est)
            raise self._no_fit(usable, seconds, left_ms)
        deeper = [n for n in self.names if self.exits[n].block > self.exits[current].block]
        if not deeper:
            return None, DEEPEST
        candidates = [n for n in deeper if n not in exclude and self.usable(n, now)]
        if not candidates:
            return None, NO_DEEPER
        for name in candidates:
            est = self.resume_estimate(current, name, seconds, now) if reuse else self.estimate(name, seconds, now)
            if est.total_ms <= left_ms:
                return Decision(name, est.total_ms), None
        return None, BUDGET

    def worth_state(self, current: str, seconds: float, left_ms: float, now: float, exclude: Mapping[str, str] | None = None) -> bool:
        """Whether a deeper step could still fit in ``left_ms`` after ``current`` answers:
        only then is ``current``'s block output worth asking for."""
        exclude = exclude or {}
        block = self.exits[current].block
        return any(
            self.resume_estimate(current, n, seconds, now).total_ms <= left_ms
            for n in self.names
            if self.exits[n].block > block and n not in exclude and self.usable(n, now)
        )

    def fallback_ms(self, name: str, seconds: float, now: float, exclude: Mapping[str, str] | None = None) -> float | None:
        """Expected latency of the soonest usable exit shallower than ``name`` (None: none):
        how much of the budget to keep for falling back if ``name`` does not answer."""
        exclude = exclude or {}
        block = self.exits[name].block
        ests = [
            self.estimate(n, seconds, now).total_ms
            for n in self.names
            if self.exits[n].block < block and n not in exclude and self.usable(n, now)
        ]
        return min(ests) if ests else None

    # ---- what happened -----------------------------------------------------------------
    def sent(self, name: str, seconds: float, now: float, resumed: bool = False, probe: bool = False) -> Ticket:
        e = self.exits[name]
        ticket = Ticket(name, now, seconds, self.ahead(name, now), resumed, probe)
        e.in_flight += 1
        if probe:
            e.last_heard = now
        return ticket

    def _close(self, ticket: Ticket) -> _Exit | None:
        if ticket.closed:
            return None
        ticket.closed = True
        e = self.exits[ticket.exit]
        e.in_flight = max(0, e.in_flight - 1)
        return e

    def answered(
        self,
        ticket: Ticket,
        now: float,
        *,
        compute_ms: float,
        queue_ms: float,
        replica: str | None = None,
        depth: int | None = None,
        batch_size: int = 1,
        batch_audio_s: float | None = None,
    ) -> None:
        """A call came back with an answer: learn from it, clear failures. ``batch_size``
        and ``batch_audio_s`` (clips x the longest) describe the batch it ran in."""
        e = self._close(ticket)
        if e is None:
            return
        call_ms = (now - ticket.sent) * 1000.0
        if not ticket.resumed:  # a resumed call runs fewer blocks than the profile timed
            n = max(batch_size, 1)
            padded = batch_audio_s / n if batch_audio_s else ticket.seconds
            e.cost.add(now, compute_ms / (n * self.p50(e.name, padded)))
        e.overhead.add(now, max(call_ms - queue_ms - compute_ms, 0.0))
        if replica is not None and depth is not None:
            e.reports[replica] = (now, depth)
        e.last_heard = now
        e.failures = 0
        e.ejections = 0
        e.probation = False

    def reported(self, name: str, replica: str, depth: int, now: float) -> None:
        """A replica's queue depth, learnt outside an answer (e.g. from an expired call)."""
        self.exits[name].reports[replica] = (now, depth)

    def gave_up(self, ticket: Ticket, now: float) -> None:
        """The router stopped waiting (timeout, cancelled) or the replica dropped the call
        as expired: the exit took at least this long. No failure."""
        e = self._close(ticket)
        if e is None:
            return
        if not ticket.probe:
            self.missed(now)
        waited = (now - ticket.sent) * 1000.0
        lower = max(waited - self.overhead_ms(e.name, now), 0.0)
        if not ticket.resumed:  # at least this long for its work and the work ahead of it
            e.cost.add(now, lower / ((1.0 + ticket.ahead) * self.p50(e.name, ticket.seconds)))
        if e.probation:  # its trial call did not come back: eject again
            self._eject(e, now)

    def failed(self, ticket: Ticket, now: float) -> None:
        """The call raised or the replica was unreachable: counts toward ejection."""
        e = self._close(ticket)
        if e is None:
            return
        e.failures += 1
        if e.probation or e.failures >= self.config.eject_after_failures:
            self._eject(e, now)

    def refused(self, ticket: Ticket) -> None:
        """The deployment refused the call (its queue is full): no failure, no latency."""
        self._close(ticket)

    def _eject(self, e: _Exit, now: float) -> None:
        c = self.config
        e.ejections += 1
        e.failures = 0
        e.ejected_until = now + min(c.cooldown_s * 2 ** (e.ejections - 1), c.max_cooldown_s)
        e.probation = True  # after the cool-down: one call at a time until one succeeds

    def take_probes(self, now: float) -> list[str]:
        """Exits due for a probe (not heard from for ``probe_interval_s``, idle, not
        ejected); they count as heard from now, so each is returned once per interval."""
        interval = self.config.probe_interval_s
        if interval is None:
            return []
        due = [
            n for n, e in self.exits.items()
            if now - e.last_heard >= interval and e.in_flight == 0 and self.state(n, now) == UP
        ]
        for n in due:
            self.exits[n].last_heard = now
        return due

    # ---- introspection -----------------------------------------------------------------
    def health(self, now: float) -> dict[str, str]:
        return {n: self.state(n, now) for n in self.names}

    def describe(self, seconds: float, now: float) -> dict:
        out = {}
        for n, e in self.exits.items():
            est = self.estimate(n, seconds, now)
            out[n] = {
                "block": e.block,
                "uar": e.entry.uar,
                "state": self.state(n, now),
                "profile_ms": {"p50": round(e.entry.latency_at(seconds, "p50"), 3),
                               "p95": round(e.entry.latency_at(seconds, "p95"), 3)},
                "expected_ms": round(est.total_ms, 3),
                "service_ms": round(est.service_ms, 3),
                "wait_ms": round(est.wait_ms, 3),
                "overhead_ms": round(est.overhead_ms, 3),
                "in_flight": e.in_flight,
                "ahead_per_replica": round(est.ahead, 3),
                "replicas_seen": sum(1 for t, _ in e.reports.values() if now - t <= self.config.replica_ttl_s),
                "cost": round(self.cost(n, seconds, now, 0.5), 3),
                "observations": len(e.cost),
                "failures_in_a_row": e.failures,
            }
        return out

