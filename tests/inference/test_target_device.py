"""Latency on the target device (profile / evaluate / tune --device, the device recorded in
exit_profile.json) and serving an exit with onnxruntime (the serve config's per-exit
``runtime``, a replica re-profiling itself where the profile's numbers do not hold).

No GPU here or in CI: CUDA paths are checked for their clear errors; the CPU path is real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from emodistill.evaluate.latency import check_device, profile_exits, synchronizer, time_interleaved
from emodistill.exit_profile import DeviceInfo, parse_profile, read_profile
from emodistill.serve.config import ServeArgs
from emodistill.serve.policy import LoadState, PolicyConfig
from emodistill.serve.predictor import ExitPredictor, OnnxExitPredictor, make_predictor

CUDA = torch.cuda.is_available()


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")
def test_cuda_asked_for_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        check_device("cuda")
    with pytest.raises(ValueError, match="not one of cpu, cuda"):
        check_device("tpu")
    assert check_device(None) == "cpu"


def test_timing_records_the_device_and_threads():
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    synchronizer("cpu")()  # a no-op on the CPU
    calls = []
    stats = time_interleaved({"a": lambda: calls.append(1)}, warmup=1, repeats=3, device="cpu")
    assert len(calls) == 4 and stats["a"]["latency_ms_p95"] >= stats["a"]["latency_ms_p50"]
    model = build_model(ModelConfig(backbone=BackboneConfig(arch="tiny"), exits=[1, 2], student_head="mean"), ["a", "b"])
    report = profile_exits(model, seconds=0.5, warmup=0, repeats=2, device="cpu")
    device = DeviceInfo.model_validate(report["device"])
    assert (device.kind, device.threads) == ("cpu", torch.get_num_threads())
    assert device.describe().startswith("cpu, ") and f"({device.threads} threads)" in device.describe()


def test_evaluate_records_the_device_in_the_profile(served_checkpoint):
    profile = read_profile(str(Path(served_checkpoint).parent / "report"))
    assert profile.device.kind == "cpu" and profile.device.threads and profile.device.torch == torch.__version__
    report = json.loads((Path(served_checkpoint).parent / "report" / "report.json").read_text())
    assert report["device"]["kind"] == "cpu"
    assert profile.device.describe() in (Path(served_checkpoint).parent / "report" / "report.md").read_text()


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("args", [["profile", "--arch", "tiny", "--device", "cuda"],
                                  ["evaluate", "ckpt-not-read", "data-not-read", "--device", "cuda"]])
def test_cli_device_without_cuda_is_one_line(args):
    exe = Path(sys.executable).parent / "emodistill"
    out = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "CUDA is not available" in out.stderr and "Traceback" not in out.stderr


def test_tune_refuses_a_profile_from_another_device(served_checkpoint, tmp_path):
    from emodistill.tune.config import SweepConfig
    from emodistill.tune.sweep import latency_device

    profile = str(Path(served_checkpoint).parent / "report" / "exit_profile.json")
    base = {"train_config": "jobs/configs/demo_cpu.yaml", "search": {"loss.kd_weight": {"kind": "choice", "values": [0, 1]}}}
    cfg = SweepConfig.model_validate({**base, "latency_profile": profile, "latency_device": "cuda"})
    with pytest.raises(ValueError, match="was measured on cpu"):
        latency_device(cfg)
    assert latency_device(SweepConfig.model_validate({**base, "latency_profile": profile})).kind == "cpu"
    assert latency_device(SweepConfig.model_validate(base)) == DeviceInfo.current("cpu")


# ---- serving an exit with onnxruntime -----------------------------------------------------

def test_serve_config_runtime_per_exit():
    args = ServeArgs.model_validate({
        "checkpoint": "ckpt", "cascade": {"reuse_hidden_states": False},
        "per_exit": {"exit_1": {"runtime": "onnxruntime", "onnx_model": "exports/exit_1-int8"}},
    })
    assert args.options_for("exit_1").runtime == "onnxruntime" and args.options_for("exit_2").runtime == "torch"
    with pytest.raises(ValidationError, match="reuse_hidden_states: false"):
        ServeArgs.model_validate({"checkpoint": "ckpt", "per_exit": {"exit_1": {"runtime": "onnxruntime"}}})
    with pytest.raises(ValidationError, match="set runtime: onnxruntime"):
        ServeArgs.model_validate({"checkpoint": "ckpt", "deployment": {"onnx_model": "x"}})


def test_onnx_exit_predictor_answers_like_torch(served_checkpoint):
    torch_side = make_predictor(served_checkpoint, "exit_2")
    onnx_side = make_predictor(served_checkpoint, "exit_2", runtime="onnxruntime")
    assert isinstance(onnx_side, OnnxExitPredictor) and type(torch_side) is ExitPredictor
    rng = np.random.default_rng(0)
    waves = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (16000, 24000, 16000)]
    a, b = torch_side.predict(waves), onnx_side.predict(waves)
    assert [p.exit for p in b] == ["exit_2"] * 3
    np.testing.assert_allclose([p.probabilities for p in a], [p.probabilities for p in b], atol=1e-4)
    assert onnx_side.describe()["runtime"] == "onnxruntime-fp32" and onnx_side.labels == torch_side.labels
    with pytest.raises(ValueError, match="no block output"):
        onnx_side.predict(waves, return_state=True)
    with pytest.raises(ValueError, match="cannot continue"):
        onnx_side.resume([])
    latency = onnx_side.measure_latency([0.5, 1.0], warmup=0, repeats=2)
    assert list(latency) == ["0.5", "1"] and all(v["p95"] >= v["p50"] > 0 for v in latency.values())


def test_replica_reprofiles_only_where_the_profile_does_not_hold(served_checkpoint):
    from emodistill.serve.app import reprofile

    predictor = make_predictor(served_checkpoint, "exit_1")
    here = DeviceInfo.current("cpu").model_dump()
    other = {**here, "name": "some other CPU"}
    assert reprofile(predictor, "cpu", "torch", here, [1.0]) is None
    assert reprofile(predictor, "cpu", "torch", None, [1.0]) is None
    measured = reprofile(predictor, "cpu", "torch", other, [1.0, 2.0])
    assert measured["device"] == here and list(measured["latency_ms"]) == ["1", "2"]
    assert reprofile(predictor, "cpu", "onnxruntime", here, [1.0]) is not None  # the profile timed torch

    # the router plans with the re-profiled numbers: they replace the profile's in its LoadState
    text = (Path(served_checkpoint).parent / "report" / "exit_profile.json").read_text()
    profile = parse_profile(text)
    moved = profile.with_latency("exit_1", {"1": {"p50": 123.0, "p95": 150.0}, "2": {"p50": 246.0, "p95": 300.0}})
    assert moved.exits["exit_1"].latency_at(1.0, "p50") == 123.0 and moved.exits["exit_2"] == profile.exits["exit_2"]
    assert profile.exits["exit_1"].latency_at(1.0, "p50") != 123.0  # a copy
    with pytest.raises(KeyError):
        profile.with_latency("exit_9", {"1": {"p50": 1.0, "p95": 1.0}})
    state = LoadState(moved, PolicyConfig())
    assert state.p50("exit_1", 1.0) == pytest.approx(123.0)
