"""The routing policy's load state, on its own: no Ray, no clock (time is passed in)."""

from __future__ import annotations

import pytest
from emodistill.exit_profile import DeviceInfo, make_profile
from emodistill.serve.config import ServeArgs
from emodistill.serve.policy import (
    BUDGET,
    DEEPEST,
    DOWN,
    LOAD,
    NO_DEEPER,
    OVER_BUDGET,
    PROBATION,
    UNAVAILABLE,
    UP,
    LoadState,
    NoExitFits,
    PolicyConfig,
    Samples,
)

# ms at 1 s and 3 s clips: p50, p95 (p95 = 1.2 x p50); latency grows with depth and length
LATENCY = {
    "exit_1": {"1": {"p50": 5.0, "p95": 6.0}, "3": {"p50": 10.0, "p95": 12.0}},
    "exit_3": {"1": {"p50": 10.0, "p95": 12.0}, "3": {"p50": 20.0, "p95": 24.0}},
    "exit_6": {"1": {"p50": 20.0, "p95": 24.0}, "3": {"p50": 40.0, "p95": 48.0}},
}
PROFILE = make_profile(
    model={"name": "m", "version": "v"}, labels=["a", "b"], device=DeviceInfo(), uar={}, latency=LATENCY
)
QUIET = PolicyConfig(prior_overhead_ms=0.0, probe_interval_s=None)


def state(**kw) -> LoadState:
    return LoadState(PROFILE, PolicyConfig(**{**QUIET.__dict__, **kw}), now=0.0)


def answer(s: LoadState, name: str, now: float, compute_ms: float, queue_ms: float = 0.0, overhead_ms: float = 0.0,
           seconds: float = 3.0, replica: str | None = None, depth: int | None = None) -> None:
    call_ms = compute_ms + queue_ms + overhead_ms
    t = s.sent(name, seconds, now - call_ms / 1000.0)
    s.answered(t, now, compute_ms=compute_ms, queue_ms=queue_ms, replica=replica, depth=depth)


def test_before_any_observation_the_profile_quantile_is_the_estimate():
    s = state()
    e = s.estimate("exit_3", 3.0, 0.0)
    assert (e.service_ms, e.wait_ms, e.overhead_ms) == (pytest.approx(24.0), 0.0, 0.0)  # p95
    assert state(quantile=0.5).estimate("exit_3", 3.0, 0.0).service_ms == pytest.approx(20.0)
    assert state(quantile=0.99).estimate("exit_3", 3.0, 0.0).service_ms > 24.0
    assert s.estimate("exit_3", 2.0, 0.0).service_ms == pytest.approx(18.0)  # between measured lengths
    assert state(prior_overhead_ms=3.0).estimate("exit_1", 1.0, 0.0).total_ms == pytest.approx(9.0)


@pytest.mark.parametrize(
    "left,seconds,expected", [(100, 3.0, "exit_6"), (47, 3.0, "exit_3"), (24, 3.0, "exit_3"), (15, 3.0, "exit_1"), (24, 1.0, "exit_6")]
)
def test_deepest_exit_expected_within_the_time_left(left, seconds, expected):
    d = state().choose(seconds, left, 0.0)
    assert (d.exit, d.degraded, d.reason) == (expected, False, None)


def test_nothing_fits_is_an_error_carrying_the_soonest_exit():
    with pytest.raises(NoExitFits) as err:
        state().choose(3.0, 5.0, 0.0)
    assert err.value.usable and (err.value.fastest.exit, err.value.fastest.reason) == ("exit_1", OVER_BUDGET)
    assert "exit_1 in ~12 ms" in str(err.value) and "clip length" in str(err.value)


def test_observations_replace_the_profile_median_first_then_their_own_tail_and_decay_back():
    s = state(half_life_s=10.0)
    answer(s, "exit_6", 1.0, compute_ms=200.0)  # one odd answer among few moves nothing
    assert s.service_ms("exit_6", 3.0, 1.0) == pytest.approx(48.0)
    answer(s, "exit_6", 1.1, compute_ms=120.0)  # two in a row do: the median x the profile's p95/p50
    assert s.service_ms("exit_6", 3.0, 1.1) == pytest.approx(120.0 * 1.2)
    assert s.choose(3.0, 100.0, 1.1).exit == "exit_3"
    for i in range(70):  # then the machine is fast, consistently: enough for a tail of its own
        answer(s, "exit_6", 2.0 + i * 0.005, compute_ms=20.0)
    assert s.service_ms("exit_6", 3.0, 2.5) == pytest.approx(20.0)
    assert s.choose(3.0, 30.0, 2.5).exit == "exit_6"
    answer(s, "exit_6", 2.6, compute_ms=200.0)  # one slow answer among many is outvoted
    assert s.service_ms("exit_6", 3.0, 2.6) == pytest.approx(20.0)
    assert s.service_ms("exit_6", 3.0, 600.0) == pytest.approx(48.0)  # nothing heard for minutes: the profile


def test_requests_in_flight_count_as_work_ahead_and_move_the_choice():
    s = state()
    tickets = [s.sent("exit_6", 3.0, 0.0) for _ in range(2)]
    e = s.estimate("exit_6", 3.0, 0.0)
    # two clips ahead + this one at the profile's p50 (40 ms), the p95 spread (8 ms) in quadrature
    assert e.ahead == 2 and e.total_ms == pytest.approx(3 * 40.0 + 3**0.5 * 8.0)
    assert s.choose(3.0, 100.0, 0.0).exit == "exit_3"
    for t in tickets:
        s.answered(t, 0.05, compute_ms=40.0, queue_ms=0.0)
    assert s.estimate("exit_6", 3.0, 0.05).wait_ms == 0.0 and s.choose(3.0, 100.0, 0.05).exit == "exit_6"


def test_model_time_is_learnt_per_clip_of_a_batch_and_queue_wait_is_counted_once():
    s = state()
    blocker = s.sent("exit_3", 3.0, 0.0)
    t = s.sent("exit_3", 3.0, 0.0)  # one request ahead of it
    # 100 ms call: 50 queue + 40 model (a batch of 2 clips of 3 s: 20 ms each, as profiled) + 10 transport
    s.answered(t, 0.100, compute_ms=40.0, queue_ms=50.0, batch_size=2, batch_audio_s=6.0)
    s.answered(blocker, 0.100, compute_ms=40.0, queue_ms=0.0, batch_size=2, batch_audio_s=6.0)
    x = s.exits["exit_3"]
    assert [v for _, v in x.cost.items] == [pytest.approx(1.0), pytest.approx(1.0)]  # per clip, model time only
    assert [v for _, v in x.overhead.items] == [pytest.approx(10.0), pytest.approx(60.0)]
    # a 1 s clip batched with a 3 s one was padded to 3 s: its cost is against p50(3 s)
    short = s.sent("exit_1", 1.0, 0.0)
    s.answered(short, 0.03, compute_ms=20.0, queue_ms=0.0, batch_size=2, batch_audio_s=6.0)
    assert [v for _, v in s.exits["exit_1"].cost.items] == [pytest.approx(20.0 / (2 * 10.0))]
    # an exit never observed borrows the transport overhead the others show
    seen = (s.overhead_ms("exit_1", 0.1) + s.overhead_ms("exit_3", 0.1)) / 2
    assert s.overhead_ms("exit_6", 0.1) == pytest.approx(seen)


def test_queue_depth_reported_by_replicas_counts_load_from_other_routers_and_replica_count():
    s = state(report_ttl_s=2.0, replica_ttl_s=30.0)
    answer(s, "exit_6", 1.0, compute_ms=40.0, replica="r1", depth=6)  # six calls from other routers wait there
    assert s.ahead("exit_6", 1.0) == 6 and s.choose(3.0, 100.0, 1.0).exit == "exit_3"
    answer(s, "exit_6", 1.1, compute_ms=40.0, replica="r2", depth=0)  # a second replica: load spreads
    assert s.ahead("exit_6", 1.1) == pytest.approx(3.0)
    assert s.ahead("exit_6", 4.0) == 0  # reports older than their ttl no longer count
    assert s.describe(3.0, 4.0)["exit_6"]["replicas_seen"] == 2
    assert s.describe(3.0, 40.0)["exit_6"]["replicas_seen"] == 0  # scaled down: forgotten
    configured = LoadState(PROFILE, QUIET, replicas={"exit_6": 4}, now=0.0)
    for _ in range(8):
        configured.sent("exit_6", 3.0, 0.0)
    assert configured.ahead("exit_6", 0.0) == 2.0  # 8 in flight over 4 configured replicas


def test_a_timeout_is_no_failure_but_says_the_exit_took_at_least_that_long():
    s = state()
    t = s.sent("exit_6", 3.0, 1.0)
    s.gave_up(t, 1.2)
    assert s.state("exit_6", 1.2) == UP and s.exits["exit_6"].in_flight == 0
    s.gave_up(t, 1.3)  # a ticket closes once
    assert s.exits["exit_6"].in_flight == 0 and len(s.exits["exit_6"].cost) == 1
    s.gave_up(s.sent("exit_6", 3.0, 1.3), 1.5)  # twice: the exit is slow (restarting, swamped)
    assert s.service_ms("exit_6", 3.0, 1.5) == pytest.approx(200.0 * 1.2)


def test_outlier_ejection_after_failures_in_a_row_then_probation():
    s = state(eject_after_failures=3, cooldown_s=5.0, max_cooldown_s=60.0)
    for _ in range(2):
        s.failed(s.sent("exit_6", 3.0, 0.0), 0.0)
    assert s.state("exit_6", 0.0) == UP  # two failures in a row: still serving
    answer(s, "exit_6", 0.1, compute_ms=40.0)  # a success clears the count
    for _ in range(3):
        s.failed(s.sent("exit_6", 3.0, 1.0), 1.0)
    assert s.state("exit_6", 1.0) == DOWN and s.health(1.0)["exit_6"] == DOWN
    d = s.choose(3.0, 1000.0, 1.0)
    assert (d.exit, d.degraded, d.reason) == ("exit_3", True, UNAVAILABLE)
    assert s.state("exit_6", 6.0) == PROBATION and s.usable("exit_6", 6.0)
    trial = s.sent("exit_6", 3.0, 6.0)
    assert not s.usable("exit_6", 6.0)  # one call at a time on probation
    s.failed(trial, 6.1)  # fails again: ejected twice as long
    assert s.state("exit_6", 15.0) == DOWN and s.state("exit_6", 16.2) == PROBATION
    answer(s, "exit_6", 17.0, compute_ms=40.0)
    assert s.state("exit_6", 17.0) == UP


def test_cooldown_zero_ejects_for_no_time_and_the_exit_stays_on_probation():
    s = state(eject_after_failures=1, cooldown_s=0.0)
    s.failed(s.sent("exit_6", 3.0, 0.0), 0.0)
    assert s.state("exit_6", 0.0) == PROBATION and s.usable("exit_6", 0.0)
    # a request that saw it fail excludes it: its next choice is another exit
    assert s.choose(3.0, 1000.0, 0.0, exclude={"exit_6": "error"}).reason == "error"
    with pytest.raises(NoExitFits) as err:
        s.choose(3.0, 1000.0, 0.0, exclude={n: "error" for n in s.names})
    assert not err.value.usable and err.value.fastest is None


def test_cascade_steps_while_the_extra_blocks_fit_and_says_why_it_stops():
    s = state()
    first, _ = s.cascade_next(None, 3.0, 100.0, 0.0)
    assert first.exit == "exit_1"
    nxt, _ = s.cascade_next("exit_1", 3.0, 13.0, 0.0)  # resuming exit_3 from block 1: 24 - 12 = 12 ms
    assert nxt.exit == "exit_3" and nxt.expected_ms == pytest.approx(12.0)
    assert s.cascade_next("exit_1", 3.0, 13.0, 0.0, reuse=False) == (None, BUDGET)  # from the waveform: 24 ms
    assert s.cascade_next("exit_6", 3.0, 1000.0, 0.0) == (None, DEEPEST)
    for _ in range(3):
        s.failed(s.sent("exit_6", 3.0, 0.0), 0.0)
    assert s.cascade_next("exit_3", 3.0, 1000.0, 0.0) == (None, NO_DEEPER)
    # block outputs are worth asking for only when a deeper step can still fit
    assert s.worth_state("exit_1", 3.0, 13.0, 0.0) and not s.worth_state("exit_1", 3.0, 11.0, 0.0)
    assert not s.worth_state("exit_3", 3.0, 1000.0, 0.0)  # exit_6 is ejected
    with pytest.raises(NoExitFits):
        s.cascade_next(None, 3.0, 5.0, 0.0)


def test_fallback_keeps_room_for_the_soonest_shallower_exit():
    s = state()
    assert s.fallback_ms("exit_6", 3.0, 0.0) == pytest.approx(12.0)
    assert s.fallback_ms("exit_6", 3.0, 0.0, exclude={"exit_1": "error"}) == pytest.approx(24.0)
    assert s.fallback_ms("exit_1", 3.0, 0.0) is None


def test_probes_go_to_exits_not_heard_from_once_per_interval():
    s = state(probe_interval_s=5.0)
    assert s.take_probes(1.0) == []
    answer(s, "exit_1", 4.0, compute_ms=10.0)
    assert s.take_probes(5.5) == ["exit_3", "exit_6"]  # exit_1 answered at 4.0
    assert s.take_probes(6.0) == []  # once per interval
    s.sent("exit_3", 3.0, 10.0)  # busy exits need no probe
    for _ in range(3):
        s.failed(s.sent("exit_6", 3.0, 10.0), 10.0)  # ejected ones get their trial call from traffic
    assert s.take_probes(11.0) == ["exit_1"]
    assert state(probe_interval_s=None).take_probes(1000.0) == []


def test_tail_of_decaying_samples():
    q = Samples(8)
    assert q.tail(0.95, 0.0, 10.0, prior=2.0, prior_weight=1.0, spread=1.5) == 3.0  # the prior alone
    for v in [1.0, 2.0, 3.0, 4.0]:
        q.add(0.0, v)
    assert q.tail(0.95, 0.0, 10.0, prior=10.0, prior_weight=1.0) == 3.0  # few: their median with the prior
    for _ in range(20):
        q.add(0.0, 0.5)
    assert len(q) == 8  # bounded
    many = Samples(64)
    for v in range(1, 41):
        many.add(0.0, float(v))
    assert many.tail(0.95, 0.0, 10.0, prior=1.0, prior_weight=1.0) == 38.0  # enough: their own p95 (the prior among them)
    assert many.tail(0.95, 1000.0, 10.0, prior=1.0, prior_weight=1.0, spread=2.0) == 2.0  # aged out


def test_serve_args_fill_the_policy_config():
    args = ServeArgs(checkpoint="x", planning={"quantile": 0.99, "probe_interval_s": None}, unavailable_cooldown_s=0)
    cfg = args.policy_config()
    assert (cfg.quantile, cfg.probe_interval_s, cfg.cooldown_s, cfg.eject_after_failures) == (0.99, None, 0.0, 3)


def test_tails_of_the_parts_add_in_quadrature_not_one_on_top_of_another():
    s = state()
    for i in range(40):  # model time: mostly 20 ms, one in ten 40 ms; transport: 5 ms, one in ten 20 ms
        slow = i % 10 == 0
        answer(s, "exit_6", 1.0 + i * 0.001, compute_ms=40.0 if slow else 20.0, overhead_ms=20.0 if slow else 5.0)
    e = s.estimate("exit_6", 3.0, 1.05)
    assert (e.service_ms, e.overhead_ms) == (pytest.approx(40.0), pytest.approx(20.0))
    assert e.total_ms == pytest.approx(20.0 + 5.0 + (20.0**2 + 15.0**2) ** 0.5)  # 50 ms, not 60


def test_under_pressure_depth_is_shed_before_requests_and_comes_back():
    s = state(min_headroom=0.3, recover_s=10.0)
    assert s.choose(3.0, 100.0, 0.0).exit == "exit_6"
    for _ in range(6):  # requests missed: refusals for load, late answers, calls given up on
        s.missed(0.0)
    assert s.headroom(0.0) == pytest.approx(0.3)
    d = s.choose(3.0, 100.0, 0.0)  # exit_6 (48 ms) fits 100 ms, but not 30% of it
    assert (d.exit, d.degraded, d.reason) == ("exit_3", True, LOAD)
    d = s.choose(3.0, 30.0, 0.0)  # nothing within 9 ms: the soonest that fits 30 ms
    assert (d.exit, d.degraded, d.reason) == ("exit_1", True, LOAD)
    with pytest.raises(NoExitFits) as err:  # the pressure never refuses what fits the whole budget
        s.choose(3.0, 10.0, 0.0)
    assert not err.value.load  # even idle, 12 ms do not fit 10: the clip, not the load
    assert s.headroom(5.0) == pytest.approx(0.65) and s.choose(3.0, 100.0, 10.0).exit == "exit_6"
    t = s.sent("exit_6", 3.0, 20.0)
    s.gave_up(t, 20.5)  # a call given up on is a miss too
    assert s.headroom(20.5) == pytest.approx(0.8)
