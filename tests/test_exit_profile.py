"""exit_profile.json has one owner: write -> read round trip, old files, bad files."""

import json

import pytest

from emodistill.exit_profile import DeviceInfo, ExitProfile, make_profile, parse_profile, read_profile, write_profile
from emodistill.exits import deepest, exit_block, exit_name, is_exit_name, sort_exits


def _profile() -> ExitProfile:
    return make_profile(
        model={"name": "wav2vec2-tiny", "version": "abc", "checkpoint": "ckpt"},
        labels=["angry", "sad"],
        device=DeviceInfo(kind="cpu", name="test cpu", threads=2, torch="2.13.0"),
        uar={"exit_1": 0.5, "exit_12": 0.8},
        latency={
            "exit_12": {"1": {"p50": 10.0, "p95": 12.0}, "3": {"p50": 30.0, "p95": 36.0}},
            "exit_1": {"3": {"p50": 3.0, "p95": 4.0}, "1": {"p50": 1.0, "p95": 1.5}},
        },
    )


def test_round_trip_and_order(tmp_path):
    path = write_profile(str(tmp_path), _profile())
    assert path.endswith("exit_profile.json")
    back = read_profile(str(tmp_path))
    assert back == _profile()
    assert back.exit_names == ["exit_1", "exit_12"]  # shallow first, whatever the input order
    assert list(back.exits["exit_1"].latency_ms) == ["1", "3"]


def test_latency_interpolates_each_quantile():
    e = _profile().exits["exit_12"]
    assert e.latency_at(2.0, "p50") == pytest.approx(20.0)
    assert e.latency_at(2.0) == pytest.approx(24.0)  # p95 is the default
    assert e.latency_at(6.0, "p50") == pytest.approx(60.0)  # extended beyond the longest length


def test_latency_at_any_tail_quantile_from_p50_and_p95():
    e = _profile().exits["exit_12"]
    assert e.latency_quantile(2.0, 0.5) == pytest.approx(20.0)
    assert e.latency_quantile(2.0, 0.95) == pytest.approx(24.0)
    assert e.latency_quantile(2.0, 0.99) == pytest.approx(20.0 + 4.0 * 2.3263 / 1.6449, rel=1e-3)
    with pytest.raises(ValueError, match="outside"):
        e.latency_quantile(2.0, 0.3)


def test_version_1_files_still_load():
    old = {
        "model": {"name": "m", "version": "v"},
        "labels": ["a", "b"],
        "hardware": {"machine": "x86_64", "processor": "", "torch_threads": 2},
        "exits": {"exit_2": {"block": 2, "uar": 0.7, "latency_ms": {"1": {"p50": 2.0, "p95": 3.0}}}},
    }
    doc = parse_profile(json.dumps(old))
    assert doc.device.threads == 2 and doc.exits["exit_2"].block == 2


@pytest.mark.parametrize(
    "exits, message",
    [
        ({}, "no exits"),
        ({"exit_2": {"block": 3, "latency_ms": {"1": {"p50": 1, "p95": 2}}}}, "does not match"),
        ({"exit_2": {"block": 2, "latency_ms": {}}}, "no latency"),
        ({"exit_2": {"block": 2, "latency_ms": {"1": {"p50": 3, "p95": 2}}}}, "below p50"),
    ],
)
def test_malformed_profiles_are_refused(exits, message):
    with pytest.raises(ValueError, match=message):
        parse_profile(json.dumps({"format": "emodistill-exit-profile", "version": 2, "exits": exits}))


def test_only_names_what_is_missing():
    with pytest.raises(ValueError, match=r"exit_4"):
        _profile().only(["exit_1", "exit_4"])
    assert _profile().only(["exit_12"]).exit_names == ["exit_12"]


def test_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="emodistill evaluate"):
        read_profile(str(tmp_path / "nowhere"))


def test_exit_names():
    assert exit_name(3) == "exit_3" and exit_block("exit_12") == 12
    assert sort_exits(["exit_10", "exit_2", "exit_2"]) == ["exit_2", "exit_10"]
    assert deepest(["exit_3", "exit_12", "exit_9"]) == "exit_12"
    for bad in ["exit_", "exit_03", "exit_-1", "Exit_3", "exit_3a", 3, "exit_٣"]:
        assert not is_exit_name(bad)
    with pytest.raises(ValueError, match="exit_<block>"):
        exit_block("teacher")
    with pytest.raises(ValueError):
        exit_name(0)
