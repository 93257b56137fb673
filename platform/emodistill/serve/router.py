"""The router core: SLA -> exit -> answer, within a deadline. No Ray and no HTTP in here.

:class:`Router` talks to exits through :class:`ExitClient` objects: in a Serve app they
wrap deployment handles (``emodistill.serve.app``); in tests and benchmarks
:class:`LocalExitClient` wraps an in-process :class:`~emodistill.serve.replica.ExitWorker`.
Every decision comes from the policy's :class:`~emodistill.serve.policy.LoadState`; the
router does the I/O around it. The HTTP API (routes, limits, error mapping) is
``emodistill.serve.api``.

One request:

1. Its deadline is fixed when it arrives: ``started`` is the arrival time the API took
   (from ``X-Request-Start`` when a load balancer set one), so time spent in the proxy's
   queue, the upload and decoding count. ``response_margin_ms`` is kept back for the way
   back to the client.
2. Admission: the deepest usable exit expected (at the planning quantile) within the time
   left. None: ``503 overloaded`` with ``Retry-After`` at once, before any queue grows;
   or, for a tier in ``degrade_tiers``, the soonest exit, flagged ``degraded``
   (``over_budget``).
3. The call carries the time the router will wait for it; the exit replica drops it
   unstarted once that has passed. The router waits until only a shallower exit could
   still answer in time, then cancels the call (Serve cancels it at the replica) and
   falls back. A failed call falls back too. Each exit is tried at most once per request:
   no retry loop. Nothing left: ``504 deadline_exceeded`` (gave up for time) or
   ``503 unavailable`` (every exit down or failing), both with ``Retry-After``.
4. The answer says ``late: true`` whenever the router's clock passed the budget: a late
   answer is never passed off as on time (only degrade tiers can be late by plan).

Tier ``auto`` runs the confidence cascade: the shallowest exit that fits, then deeper
ones while unsure and while the next step fits the time left, each continuing from the
previous block output, which is asked for only when a deeper step can still fit. The
answer says why the cascade stopped (``confident``, ``budget``, ``deepest``,
``unavailable``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from emodistill.data.audio import SAMPLE_RATE
from emodistill.exit_profile import ExitProfile
from emodistill.serve.config import TIER_AUTO, ServeArgs
from emodistill.serve.policy import (
    BUDGET,
    CONFIDENT,
    ERROR,
    EXPIRED,
    OVER_BUDGET,
    SATURATED,
    TIMEOUT,
    UNAVAILABLE,
    DOWN,
    Decision,
    LoadState,
    NoExitFits,
)
from emodistill.serve.predictor import Prediction
from emodistill.serve.replica import ExitAnswer, ExitWorker
from emodistill.serve.requests import ApiError, Sla

log = logging.getLogger("emodistill.serve")

STALLED_MS = 20.0  # an exit is stalled after stall_factor x its expected latency, and at least this much more

__all__ = [
    "ERROR", "OVER_BUDGET", "SATURATED", "TIMEOUT", "UNAVAILABLE",
    "Deadline", "ExitCallError", "ExitClient", "LocalExitClient", "Router",
]


class ExitCallError(RuntimeError):
    """A call to an exit gave no answer: ``reason`` is timeout, expired, saturated,
    unavailable or error."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ExitClient(Protocol):
    async def call(self, method: str, payload: Any, left_ms: float, return_state: bool) -> ExitAnswer:
        """Call ``method`` (predict | resume) of the exit; give up after ``left_ms``
        (cancelling the call) with ExitCallError(timeout); other failures as ExitCallError."""
        ...


class LocalExitClient:
    """An exit served in this process (tests, benchmarks): an :class:`ExitWorker`."""

    def __init__(self, worker: ExitWorker):
        self.worker = worker

    async def call(self, method: str, payload: Any, left_ms: float, return_state: bool) -> ExitAnswer:
        coro = getattr(self.worker, method)(payload, left_ms, return_state)
        try:
            return await asyncio.wait_for(coro, max(left_ms, 0.0) / 1000.0)
        except asyncio.TimeoutError as err:  # wait_for cancelled the call: the worker drops it
            raise ExitCallError(TIMEOUT, f"{self.worker.exit} gave no answer within {left_ms:.0f} ms") from err
        except Exception as err:
            raise ExitCallError(ERROR, f"{self.worker.exit} failed: {type(err).__name__}: {err}") from err


class Metrics(Protocol):
    def record(self, tier: str, exit: str, latency_ms: float, late: bool, degraded: bool) -> None: ...

    def error(self, code: str) -> None: ...


class NoMetrics:
    def record(self, tier: str, exit: str, latency_ms: float, late: bool, degraded: bool) -> None:
        pass

    def error(self, code: str) -> None:
        pass


@dataclass(frozen=True)
class Deadline:
    """A request's deadline: fixed at arrival, read as time left on this clock."""

    started: float  # time.perf_counter() at arrival
    budget_ms: float
    margin_ms: float = 0.0  # kept back for the answer's way back

    def elapsed_ms(self, now: float | None = None) -> float:
        return ((time.perf_counter() if now is None else now) - self.started) * 1000.0

    def left_ms(self, now: float | None = None) -> float:
        """Time left for exit work: budget - elapsed - margin."""
        return self.budget_ms - self.elapsed_ms(now) - self.margin_ms


@dataclass
class _Outcome:
    prediction: Prediction
    degraded: bool = False
    reason: str | None = None
    steps: list[dict] | None = None
    stopped: str | None = None
    timings: list[tuple[str, float]] = field(default_factory=list)


class Router:
    """Picks an exit per request from the profile, the deadline and what it observes."""

    def __init__(
        self,
        args: ServeArgs,
        profile: ExitProfile,
        clients: Mapping[str, ExitClient],
        labels: list[str],
        model: Mapping[str, Any],
        metrics: Metrics | None = None,
        replica: str = "local",
    ):
        profile = profile.only(list(clients))  # a clear error names any exit without a profile
        self.args = args
        self.clients = dict(clients)
        self.labels = list(labels)
        self.model = dict(model)
        self.metrics = metrics or NoMetrics()
        self.replica = replica
        replicas = {name: args.options_for(name).min_replicas for name in clients}
        self.policy = LoadState(profile, args.policy_config(), replicas, now=time.perf_counter())
        self._probes: set[asyncio.Task] = set()
        self._probe_clip = np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE).astype(np.float32)

    # ---- one request ------------------------------------------------------------------
    async def predict(self, wave: np.ndarray, sla: Sla, started: float | None = None) -> tuple[dict, list[tuple[str, float]]]:
        """Answer one decoded clip under ``sla`` from the arrival time ``started``
        (``time.perf_counter()``): (response body, server timings [(name, ms)]).
        Raises :class:`ApiError` (503 / 504 with Retry-After) when it will not answer."""
        deadline = Deadline(
            time.perf_counter() if started is None else started, sla.budget_ms, self.args.planning.response_margin_ms
        )
        seconds = len(wave) / SAMPLE_RATE
        degrade = sla.tier in self.args.degrade_tiers
        self._probe_idle_exits()
        if sla.tier == TIER_AUTO:
            out = await self._cascade(wave, seconds, deadline, degrade)
        else:
            out = await self._fixed(wave, seconds, deadline, degrade)
        latency = deadline.elapsed_ms()
        late = latency > sla.budget_ms
        if late:
            self.policy.missed(time.perf_counter())
        out.timings.append(("total", latency))
        self.metrics.record(sla.tier, out.prediction.exit, latency, late, out.degraded)
        scores = out.prediction.scores(self.labels)
        body = {
            "label": max(scores, key=scores.get),
            "scores": scores,
            "exit": out.prediction.exit,
            "block": out.prediction.block,
            "tier": sla.tier,
            "budget_ms": sla.budget_ms,
            "degraded": out.degraded,
            "degraded_reason": out.reason,
            "late": late,
            "latency_ms": round(latency, 3),
            "model": self.model.get("name"),
            "version": self.model.get("version"),
        }
        if out.steps is not None:
            body["cascade"] = out.steps
            body["stopped"] = out.stopped
        return body, out.timings

    async def _fixed(self, wave: np.ndarray, seconds: float, deadline: Deadline, degrade: bool) -> _Outcome:
        tried: dict[str, str] = {}  # exit -> why it gave this request no answer
        timings: list[tuple[str, float]] = []
        for _ in range(len(self.clients)):  # each exit at most once
            now = time.perf_counter()
            left = deadline.left_ms(now)
            try:
                decision = self.policy.choose(seconds, left, now, tried)
                patience = self._patience(decision, seconds, left, now, tried)
            except NoExitFits as err:
                decision, patience = self._no_fit(err, left, degrade, tried)
            try:
                answer = await self._call(decision.exit, "predict", wave, seconds, patience, False, timings)
            except ExitCallError as err:
                tried[decision.exit] = err.reason
                continue
            assert answer.prediction is not None
            first_failure = next(iter(tried.values()), None)
            return _Outcome(
                answer.prediction,
                degraded=decision.degraded or first_failure is not None,
                reason=first_failure or decision.reason,  # the first cause: why we left the plan
                timings=timings,
            )
        raise self._refusal(tried)

    async def _cascade(self, wave: np.ndarray, seconds: float, deadline: Deadline, degrade: bool) -> _Outcome:
        cfg = self.args.cascade
        tried: dict[str, str] = {}
        timings: list[tuple[str, float]] = []
        steps: list[dict] = []
        answer: ExitAnswer | None = None
        current: str | None = None
        carry: Any = None  # the current exit's block output (or a reference to it)
        degraded, reason, stopped, failure = False, None, None, None
        for _ in range(2 * len(self.clients)):  # each exit at most once
            now = time.perf_counter()
            left = deadline.left_ms(now)
            if current is None:
                try:
                    decision, _ = self.policy.cascade_next(None, seconds, left, now, tried)
                    assert decision is not None
                    patience = self._patience(decision, seconds, left, now, tried)
                except NoExitFits as err:
                    decision, patience = self._no_fit(err, left, degrade, tried)
            else:
                step, why = self.policy.cascade_next(current, seconds, left, now, tried, reuse=carry is not None)
                if step is None:
                    stopped = why
                    break
                decision, patience = step, left
            resume = current is not None and carry is not None
            want_state = cfg.reuse_hidden_states and self.policy.worth_state(
                decision.exit, seconds, left - decision.expected_ms, now, tried
            )
            try:
                nxt = await self._call(
                    decision.exit, "resume" if resume else "predict", carry if resume else wave, seconds, patience, want_state, timings
                )
            except ExitCallError as err:
                tried[decision.exit] = err.reason
                if current is not None and err.reason in (TIMEOUT, EXPIRED):
                    stopped = BUDGET  # the deeper step did not come in time: answer with what we have
                    break
                failure = failure or err.reason  # answered by another exit than planned
                continue  # the next shallowest, or another deeper exit from the same state
            assert nxt.prediction is not None
            answer, current = nxt, decision.exit
            carry = nxt.state_ref if nxt.state_ref is not None else nxt.prediction.state
            if decision.degraded and not degraded:
                degraded, reason = True, decision.reason
            steps.append({
                "exit": current,
                "margin": round(nxt.prediction.margin, 4),
                "compute_ms": round(nxt.compute_ms, 3),
                "queue_ms": round(nxt.queue_ms, 3),
            })
            if nxt.prediction.margin >= cfg.threshold:
                stopped = CONFIDENT
                break
        if answer is None:
            raise self._refusal(tried)
        assert answer.prediction is not None
        if failure is not None and not degraded:
            degraded, reason = True, failure
        return _Outcome(answer.prediction, degraded, reason, steps, stopped or BUDGET, timings)

    # ---- decisions around the policy ----------------------------------------------------
    def _patience(self, decision: Decision, seconds: float, left: float, now: float, tried: Mapping[str, str]) -> float:
        """How long to wait for ``decision``: while a shallower exit could still answer in
        time, until the exit looks stalled or only that fallback's time is left; without
        a fallback, until the deadline."""
        fallback = self.policy.fallback_ms(decision.exit, seconds, now, tried)
        if fallback is not None:
            plan = self.args.planning  # giving up, cancelling and re-planning take time too
            reserve = plan.fallback_factor * fallback + plan.fallback_margin_ms
            if left - reserve >= decision.expected_ms:
                patience = left - reserve
                stall = plan.stall_factor
                if stall is not None:
                    # an exit several times later than its own tail estimate is stalled (a replica
                    # restarting, a wedged batch): leave it early while the fallback has room
                    patience = min(patience, max(stall * decision.expected_ms, decision.expected_ms + STALLED_MS))
                return patience
        return max(left, 1.0)

    def _no_fit(self, err: NoExitFits, left: float, degrade: bool, tried: Mapping[str, str]) -> tuple[Decision, float]:
        """No exit is expected in time: the soonest one (degrade tiers) or a refusal."""
        if err.load:
            self.policy.missed(time.perf_counter())
        if degrade and err.fastest is not None:
            fastest = err.fastest
            return fastest, max(left, 2.0 * fastest.expected_ms, 1.0)
        if tried:
            raise self._refusal(tried, str(err))
        if not err.usable:
            raise self._refusal({})
        raise ApiError(503, "overloaded", f"{err}; retry later", self._retry_after())

    def _refusal(self, tried: Mapping[str, str], then: str | None = None) -> ApiError:
        detail = ", ".join(f"{n}: {r}" for n, r in tried.items())
        if any(r in (TIMEOUT, EXPIRED) for r in tried.values()):
            after = f"; then {then}" if then else ""
            return ApiError(
                504, "deadline_exceeded",
                f"no exit answered within the request's deadline ({detail}{after}); retry later or with a larger budget",
                self._retry_after(),
            )
        down = [n for n, s in self.policy.health(time.perf_counter()).items() if s == DOWN]
        why = detail or (f"{', '.join(down)} are down" if down else "no exit is usable now")
        return ApiError(503, "unavailable", f"no exit could answer ({why}); retry later", self._retry_after())

    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.args.retry_after_s)}

    # ---- one exit call ----------------------------------------------------------------
    async def _call(
        self,
        name: str,
        method: str,
        payload: Any,
        seconds: float,
        patience_ms: float,
        return_state: bool,
        timings: list[tuple[str, float]],
        probe: bool = False,
    ) -> ExitAnswer:
        """Call one exit, waiting at most ``patience_ms``; the outcome goes to the policy."""
        start = time.perf_counter()
        ticket = self.policy.sent(name, seconds, start, resumed=method == "resume", probe=probe)
        try:
            answer = await self.clients[name].call(method, payload, patience_ms, return_state)
        except ExitCallError as err:
            now = time.perf_counter()
            if err.reason == TIMEOUT:
                self.policy.gave_up(ticket, now)
            elif err.reason == SATURATED:
                self.policy.refused(ticket)
            else:
                self.policy.failed(ticket, now)
            if not probe:
                log.warning("exit %s gave no answer (%s): %s", name, err.reason, err)
            raise
        except BaseException:  # this request itself was cancelled (client gone): no observation
            self.policy.refused(ticket)
            raise
        now = time.perf_counter()
        if answer.expired:
            self.policy.gave_up(ticket, now)
            self.policy.reported(name, answer.replica, answer.depth, now)
            raise ExitCallError(EXPIRED, f"{name} dropped the call: its deadline passed in the queue")
        self.policy.answered(
            ticket, now, compute_ms=answer.compute_ms, queue_ms=answer.queue_ms, replica=answer.replica,
            depth=answer.depth, batch_size=answer.batch_size, batch_audio_s=answer.batch_audio_s,
        )
        timings.append((name, (now - start) * 1000.0))
        return answer

    def _probe_idle_exits(self) -> None:
        """Send a short synthetic clip to every exit not heard from for a while."""
        for name in self.policy.take_probes(time.perf_counter()):
            task = asyncio.get_running_loop().create_task(self._probe(name))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)

    async def _probe(self, name: str) -> None:
        patience = max(10.0 * self.policy.estimate(name, 1.0, time.perf_counter()).total_ms, 1000.0)
        try:
            await self._call(name, "predict", self._probe_clip, 1.0, patience, False, [], probe=True)
        except ExitCallError:
            pass

    # ---- introspection ----------------------------------------------------------------
    def health(self) -> dict:
        """``{"status": "ok" | "unavailable", "exits": {exit: "up" | "probation" | "down"}}``:
        unavailable when every exit is ejected (``/healthz`` answers 503 then)."""
        exits = self.policy.health(time.perf_counter())
        return {"status": "ok" if any(s != DOWN for s in exits.values()) else "unavailable", "exits": exits}

    def describe_exits(self, seconds: float = 3.0) -> dict:
        return {
            "model": self.model,
            "labels": self.labels,
            "tiers": {**self.args.tiers, TIER_AUTO: self.args.cascade.budget_ms},
            "default_tier": self.args.default_tier,
            "degrade_tiers": self.args.degrade_tiers,
            "quantile": self.args.planning.quantile,
            "router": self.replica,
            "exits": self.policy.describe(seconds, time.perf_counter()),
        }
