"""The router core: SLA -> exit -> answer. No Ray and no HTTP in here.

:class:`Router` talks to exits through :class:`ExitClient` objects: in a Serve app they
wrap deployment handles (``emodistill.serve.app``); in tests and benchmarks
:class:`LocalExitClient` wraps an in-process :class:`ExitPredictor`. The HTTP API around
it (routes, limits, error mapping) is ``emodistill.serve.api``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from emodistill.data.audio import SAMPLE_RATE
from emodistill.serve.config import TIER_AUTO, ServeArgs
from emodistill.serve.policy import (
    TIMEOUT,
    UNAVAILABLE,
    Decision,
    ExitLoad,
    NoExitAvailable,
    ProfileSet,
    call_timeout_ms,
    choose_exit,
    expected_ms,
    next_cascade_exit,
)
from emodistill.serve.predictor import (
    BlockState,
    ExitPredictor,
    Prediction,
)
from emodistill.serve.requests import ApiError, Sla

log = logging.getLogger("emodistill.serve")


class ExitCallError(RuntimeError):
    """A call to an exit failed for a reason of the deployment, not of the request."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason  # saturated | unavailable


class ExitClient(Protocol):
    async def predict(self, wave: np.ndarray, return_state: bool = False) -> Prediction: ...

    async def resume(self, state: BlockState, return_state: bool = False) -> Prediction: ...


class LocalExitClient:
    """An exit served in this process (tests, benchmarks): the predictor on a worker thread."""

    def __init__(self, predictor: ExitPredictor):
        self.predictor = predictor
        self._lock = threading.Lock()  # one model call at a time, even after a caller gave up

    async def predict(self, wave: np.ndarray, return_state: bool = False) -> Prediction:
        return (await asyncio.to_thread(self._locked, self.predictor.predict, [wave], return_state))[0]

    async def resume(self, state: BlockState, return_state: bool = False) -> Prediction:
        return (await asyncio.to_thread(self._locked, self.predictor.resume, [state], return_state))[0]

    def _locked(self, fn, *args):
        with self._lock:
            return fn(*args)


class Metrics(Protocol):
    def record(self, tier: str, exit: str, latency_ms: float, sla_miss: bool, degraded: bool) -> None: ...

    def error(self, code: str) -> None: ...


class NoMetrics:
    def record(self, tier: str, exit: str, latency_ms: float, sla_miss: bool, degraded: bool) -> None:
        pass

    def error(self, code: str) -> None:
        pass


@dataclass
class _ExitState:
    in_flight: int = 0
    correction: float = 1.0
    overhead_ms: float = 0.0
    down_until: float = 0.0
    calls: int = 0


class Router:
    """Picks an exit per request from the profile, the budget and what it observes."""

    def __init__(
        self,
        args: ServeArgs,
        profiles: ProfileSet,
        clients: Mapping[str, ExitClient],
        labels: list[str],
        model: Mapping[str, Any],
        metrics: Metrics | None = None,
    ):
        missing = sorted(set(clients) - {p.name for p in profiles.exits})
        if missing:
            raise ValueError(f"no latency profile for {missing}")
        self.args = args
        self.profiles = ProfileSet(exits=[p for p in profiles.exits if p.name in clients], model=profiles.model)
        self.clients = dict(clients)
        self.labels = list(labels)
        self.model = dict(model)
        self.metrics = metrics or NoMetrics()
        self.state = {p.name: _ExitState() for p in self.profiles.exits}

    # ---- what the policy sees ---------------------------------------------------------
    def loads(self, now: float | None = None) -> dict[str, ExitLoad]:
        """The policy's view of every exit. An exit not yet called borrows the mean
        correction and overhead of those that were: same hardware, same transport."""
        now = time.monotonic() if now is None else now
        known = [s for s in self.state.values() if s.calls]
        prior_corr = float(np.mean([s.correction for s in known])) if known else 1.0
        prior_over = float(np.mean([s.overhead_ms for s in known])) if known else 0.0
        return {
            name: ExitLoad(
                in_flight=s.in_flight,
                capacity=self.args.options_for(name).capacity,
                correction=s.correction if s.calls else prior_corr,
                overhead_ms=s.overhead_ms if s.calls else prior_over,
                available=now >= s.down_until,
            )
            for name, s in self.state.items()
        }

    # ---- one request ------------------------------------------------------------------
    async def predict(self, wave: np.ndarray, sla: Sla, started: float | None = None) -> tuple[dict, list[tuple[str, float]]]:
        """Answer one decoded clip under ``sla``: (response body, server timings [(name, ms)])."""
        started = time.perf_counter() if started is None else started
        seconds = len(wave) / SAMPLE_RATE
        timings: list[tuple[str, float]] = []
        if sla.tier == TIER_AUTO:
            pred, degraded, reason, steps = await self._cascade(wave, seconds, sla.budget_ms, started, timings)
        else:
            pred, degraded, reason = await self._fixed(wave, seconds, sla.budget_ms, started, timings)
            steps = None
        latency = (time.perf_counter() - started) * 1000.0
        timings.append(("total", latency))
        sla_miss = latency > sla.budget_ms
        self.metrics.record(sla.tier, pred.exit, latency, sla_miss, degraded)
        scores = pred.scores(self.labels)
        body = {
            "label": max(scores, key=scores.get),
            "scores": scores,
            "exit": pred.exit,
            "block": pred.block,
            "tier": sla.tier,
            "budget_ms": sla.budget_ms,
            "degraded": degraded,
            "degraded_reason": reason,
            "latency_ms": round(latency, 3),
            "model": self.model.get("name"),
            "version": self.model.get("version"),
        }
        if steps is not None:
            body["cascade"] = steps
        return body, timings

    async def _fixed(
        self, wave: np.ndarray, seconds: float, budget_ms: float, started: float, timings: list
    ) -> tuple[Prediction, bool, str | None]:
        failed: set[str] = set()
        failure: str | None = None
        while True:
            left = budget_ms - (time.perf_counter() - started) * 1000.0  # reading and decoding count too
            decision = self._choose(left, seconds, failed)
            try:
                pred = await self._call(decision, seconds, wave=wave, timings=timings, budget_left_ms=left)
            except ExitCallError as err:
                failed.add(decision.exit)
                failure = failure or err.reason
                continue
            degraded = decision.degraded or failure is not None
            return pred, degraded, failure or decision.reason  # the first cause: why we left the choice

    def _choose(self, budget_ms: float, seconds: float, failed: set[str]) -> Decision:
        profiles = [p for p in self.profiles.exits if p.name not in failed]
        try:
            return choose_exit(profiles, self.loads(), budget_ms, seconds)
        except NoExitAvailable as err:
            raise ApiError(
                503, "overloaded", f"no exit can take the request now ({err}); retry later",
                {"Retry-After": str(self.args.retry_after_s)},
            ) from err

    async def _cascade(
        self, wave: np.ndarray, seconds: float, budget_ms: float, started: float, timings: list
    ) -> tuple[Prediction, bool, str | None, list[dict]]:
        reuse = self.args.cascade.reuse_hidden_states
        steps: list[dict] = []
        pred: Prediction | None = None
        degraded, reason = False, None
        while True:
            elapsed = (time.perf_counter() - started) * 1000.0
            current = self.profiles.get(pred.exit) if pred is not None else None
            try:
                decision = next_cascade_exit(self.profiles.exits, self.loads(), current, elapsed, budget_ms, seconds, reuse)
            except NoExitAvailable as err:
                raise ApiError(503, "overloaded", f"no exit can take the request now ({err}); retry later",
                               {"Retry-After": str(self.args.retry_after_s)}) from err
            if decision is None:
                break
            left = budget_ms - elapsed
            try:
                if pred is not None and reuse and pred.state is not None:
                    nxt = await self._call(
                        decision, seconds, state=pred.state, timings=timings, return_state=True, budget_left_ms=left
                    )
                else:
                    nxt = await self._call(
                        decision, seconds, wave=wave, timings=timings, return_state=reuse, budget_left_ms=left
                    )
            except ExitCallError as err:
                degraded, reason = True, err.reason
                if pred is None:
                    continue  # the exit is now marked down; the next step skips it
                break
            if decision.degraded:
                degraded, reason = True, decision.reason
            pred = nxt
            steps.append({"exit": pred.exit, "margin": round(pred.margin, 4), "compute_ms": round(pred.compute_ms, 3)})
            if pred.margin >= self.args.cascade.threshold:
                break
        assert pred is not None
        return pred, degraded, reason, steps

    async def _call(
        self,
        decision: Decision,
        seconds: float,
        *,
        timings: list,
        wave: np.ndarray | None = None,
        state: BlockState | None = None,
        return_state: bool = False,
        budget_left_ms: float | None = None,
    ) -> Prediction:
        """Call one exit, waiting at most what the budget left allows (then ExitCallError)."""
        name = decision.exit
        s = self.state[name]
        profile = self.profiles.get(name)
        load = ExitLoad(in_flight=s.in_flight, capacity=self.args.options_for(name).capacity)
        timeout = None
        if budget_left_ms is not None:
            ms = call_timeout_ms(self._fallback(profile), decision, budget_left_ms, seconds)
            timeout = None if ms is None else ms / 1000.0
        s.in_flight += 1
        start = time.perf_counter()
        try:
            client = self.clients[name]
            call = client.resume(state, return_state) if state is not None else client.predict(wave, return_state)
            try:
                pred = await asyncio.wait_for(call, timeout)
            except asyncio.TimeoutError as err:
                raise ExitCallError(TIMEOUT, f"{name} gave no answer within {timeout * 1000:.0f} ms") from err
        except ExitCallError as err:
            # dead: skip it for the cool-down; refusing or too slow this time (a restarting
            # replica, a burst): skip it briefly, then try again. A timeout teaches the
            # correction nothing, so one slow call cannot bar an exit for good.
            cooldown = self.args.unavailable_cooldown_s if err.reason == UNAVAILABLE else min(1.0, self.args.unavailable_cooldown_s)
            s.down_until = time.monotonic() + cooldown
            log.warning("exit %s failed (%s): %s", name, err.reason, err)
            raise
        finally:
            s.in_flight -= 1
        observed = (time.perf_counter() - start) * 1000.0
        timings.append((name, observed))
        if state is None:  # resumed calls are cheaper than the profile says: do not learn from them
            self._learn(s, observed, pred.compute_ms, profile, seconds, load)
        s.calls += 1
        return pred

    def _fallback(self, profile) -> Any:
        """The shallowest exit below ``profile`` that is up and not saturated, if any."""
        loads = self.loads()
        for p in self.profiles.exits:  # shallowest first
            if p.block < profile.block and loads[p.name].available and not loads[p.name].saturated:
                return p
        return None

    def _learn(
        self, s: _ExitState, observed_ms: float, compute_ms: float, profile, seconds: float, load: ExitLoad
    ) -> None:
        """Smooth the exit's correction towards model time / profiled (queue wait accounted)
        and its overhead towards call time - model time. The first observation of an exit
        replaces the borrowed prior instead of being averaged with it."""
        a = self.args.ewma_alpha if s.calls else 1.0
        queue = 1.0 + load.in_flight / max(load.capacity, 1)
        ratio = compute_ms / max(profile.latency_at(seconds) * queue, 1e-3)
        s.correction = float(np.clip((1 - a) * s.correction + a * ratio, 0.05, 50.0))
        s.overhead_ms = float((1 - a) * s.overhead_ms + a * max(observed_ms - compute_ms, 0.0))

    # ---- introspection ----------------------------------------------------------------
    def health(self) -> dict:
        """``{"status": "ok" | "unavailable", "exits": {exit: "up" | "down"}}``: unavailable
        when no exit can take a request (``/healthz`` answers 503 then)."""
        exits = {n: ("up" if load.available else "down") for n, load in self.loads().items()}
        return {"status": "ok" if "up" in exits.values() else "unavailable", "exits": exits}

    def describe_exits(self, seconds: float = 3.0) -> dict:
        loads = self.loads()
        return {
            "model": self.model,
            "labels": self.labels,
            "tiers": {**self.args.tiers, TIER_AUTO: self.args.cascade.budget_ms},
            "default_tier": self.args.default_tier,
            "exits": {
                p.name: {
                    "block": p.block,
                    "uar": p.uar,
                    "profile_latency_ms": {f"{k:g}": v for k, v in sorted(p.latency_ms.items())},
                    f"expected_latency_ms_{seconds:g}s": round(expected_ms(p, seconds, loads[p.name]), 3),
                    "correction": round(loads[p.name].correction, 3),
                    "overhead_ms": round(loads[p.name].overhead_ms, 3),
                    "in_flight": loads[p.name].in_flight,
                    "available": loads[p.name].available,
                }
                for p in self.profiles.exits
            },
        }
