"""The routing policy: pure functions of profile, budget and load (no Ray)."""

from __future__ import annotations

import json

import pytest
from emodistill.serve.policy import (
    OVER_BUDGET,
    SATURATED,
    UNAVAILABLE,
    ExitLoad,
    ExitProfile,
    NoExitAvailable,
    ProfileSet,
    choose_exit,
    expected_ms,
    next_cascade_exit,
)

# latency grows with depth and with clip length (ms at 1 s and 3 s clips)
PROFILES = [
    ExitProfile("exit_1", 1, 0.60, {1.0: 5.0, 3.0: 10.0}),
    ExitProfile("exit_3", 3, 0.70, {1.0: 10.0, 3.0: 20.0}),
    ExitProfile("exit_6", 6, 0.75, {1.0: 20.0, 3.0: 40.0}),
]


def test_latency_is_interpolated_and_extrapolated_in_clip_length():
    p = PROFILES[0]
    assert p.latency_at(1.0) == 5.0 and p.latency_at(3.0) == 10.0
    assert p.latency_at(2.0) == pytest.approx(7.5)
    assert p.latency_at(5.0) == pytest.approx(15.0)  # same slope beyond the longest measured clip
    assert p.latency_at(0.0) == pytest.approx(2.5)
    assert ExitProfile("exit_1", 1, None, {2.0: 8.0}).latency_at(4.0) == pytest.approx(16.0)


def test_expected_latency_counts_correction_and_queue():
    p = PROFILES[1]
    assert expected_ms(p, 3.0) == 20.0
    assert expected_ms(p, 3.0, ExitLoad(correction=1.5)) == 30.0
    assert expected_ms(p, 3.0, ExitLoad(in_flight=4, capacity=4)) == 40.0  # a full round of work ahead
    assert expected_ms(p, 3.0, ExitLoad(overhead_ms=3.0)) == 23.0  # transport and batching wait on top


@pytest.mark.parametrize(
    "budget,seconds,expected",
    [(100, 3.0, "exit_6"), (39, 3.0, "exit_3"), (20, 3.0, "exit_3"), (15, 3.0, "exit_1"), (15, 1.0, "exit_3"), (20, 1.0, "exit_6")],
)
def test_deepest_exit_within_budget(budget, seconds, expected):
    d = choose_exit(PROFILES, {}, budget, seconds)
    assert (d.exit, d.degraded, d.reason) == (expected, False, None)


def test_nothing_fits_gives_the_shallowest_flagged_degraded():
    d = choose_exit(PROFILES, {}, 1, 3.0)
    assert (d.exit, d.degraded, d.reason) == ("exit_1", True, OVER_BUDGET)


def test_online_correction_moves_the_choice():
    slow = {"exit_6": ExitLoad(correction=2.0)}  # the deep replica runs twice as slow as profiled
    assert choose_exit(PROFILES, slow, 50, 3.0).exit == "exit_3"
    fast = {"exit_6": ExitLoad(correction=0.5)}
    assert choose_exit(PROFILES, fast, 25, 3.0).exit == "exit_6"


def test_queue_at_the_deep_exit_moves_the_choice():
    queued = {"exit_6": ExitLoad(in_flight=2, capacity=4)}  # 40 ms x 1.5
    assert choose_exit(PROFILES, queued, 50, 3.0).exit == "exit_3"


def test_saturated_or_down_deep_exit_degrades_to_a_shallower_one():
    d = choose_exit(PROFILES, {"exit_6": ExitLoad(in_flight=4, capacity=4)}, 1000, 3.0)
    assert (d.exit, d.degraded, d.reason) == ("exit_3", True, SATURATED)
    d = choose_exit(PROFILES, {"exit_6": ExitLoad(available=False)}, 1000, 3.0)
    assert (d.exit, d.degraded, d.reason) == ("exit_3", True, UNAVAILABLE)
    # a down exit that would not have met the budget anyway is no degradation
    d = choose_exit(PROFILES, {"exit_6": ExitLoad(available=False)}, 25, 3.0)
    assert (d.exit, d.degraded) == ("exit_3", False)
    with pytest.raises(NoExitAvailable):
        choose_exit(PROFILES, {p.name: ExitLoad(available=False) for p in PROFILES}, 1000, 3.0)


def test_cascade_steps_deeper_while_the_budget_left_pays_for_the_extra_blocks():
    first = next_cascade_exit(PROFILES, {}, None, 0.0, 100.0, 3.0)
    assert (first.exit, first.degraded) == ("exit_1", False)
    # reusing exit_1's blocks, exit_3 costs 20 - 10 = 10 ms more
    nxt = next_cascade_exit(PROFILES, {}, PROFILES[0], 10.0, 25.0, 3.0, reuse=True)
    assert nxt.exit == "exit_3" and nxt.expected_ms == pytest.approx(10.0)
    assert next_cascade_exit(PROFILES, {}, PROFILES[0], 10.0, 25.0, 3.0, reuse=False) is None  # 20 ms > 15 left
    assert next_cascade_exit(PROFILES, {}, PROFILES[2], 0.0, 1000.0, 3.0) is None  # nothing deeper
    over = next_cascade_exit(PROFILES, {}, None, 0.0, 1.0, 3.0)
    assert (over.exit, over.degraded, over.reason) == ("exit_1", True, OVER_BUDGET)
    skip = next_cascade_exit(PROFILES, {"exit_3": ExitLoad(available=False)}, PROFILES[0], 10.0, 100.0, 3.0)
    assert skip.exit == "exit_6"


def test_profile_set_reads_what_evaluate_writes():
    text = json.dumps(
        {
            "model": {"name": "wav2vec2-tiny", "version": "abc"},
            "labels": ["a", "b"],
            "exits": {
                "exit_4": {"block": 4, "uar": 0.8, "latency_ms": {"1": {"p50": 9.0, "p95": 11.0}, "3": {"p50": 20.0, "p95": 25.0}}},
                "exit_1": {"block": 1, "uar": 0.7, "latency_ms": {"1": {"p50": 3.0, "p95": 4.0}}},
            },
        }
    )
    ps = ProfileSet.from_json(text)
    assert [p.name for p in ps.exits] == ["exit_1", "exit_4"]
    assert ps.get("exit_4").latency_ms == {1.0: 9.0, 3.0: 20.0}
    assert [p.name for p in ProfileSet.from_json(text, only=["exit_4"]).exits] == ["exit_4"]
    with pytest.raises(ValueError, match="no profile for \\['exit_2'\\]"):
        ProfileSet.from_json(text, only=["exit_2"])
