"""`inference.export`: the real torch.onnx export and onnxruntime on the tiny model,
int8 quantization, TorchScript and safetensors, verification, the directory and its card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import padded_batch, tiny_model, tone
from emodistill.checkpoint import load_checkpoint, save_checkpoint
from emodistill.exit_profile import DeviceInfo, make_profile, write_profile
from emodistill.inference.export import ExportConfig, export


def run(checkpoint, out, **kwargs):
    kwargs.setdefault("repeats", 3)  # timing is not what these tests check
    lines: list[str] = []
    result = export(ExportConfig(checkpoint=str(checkpoint), out=str(out), **kwargs), log=lines.append)
    return result, lines


def clips(*seconds, rate=16000):
    return [tone(s, rate=rate, freq=140 + 60 * i, seed=i) for i, s in enumerate(seconds)]


def torch_logits(checkpoint, exit, waves):
    model = load_checkpoint(checkpoint, exit=exit).model
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(w)[None]).exits[exit].logits.numpy() for w in waves])


def onnx_ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.fixture(scope="module")
def profiled(trained_checkpoint):
    """The trained checkpoint with an exit_profile.json beside it (what evaluate writes)."""
    profile = make_profile(
        model={"name": "wav2vec2-tiny", "version": None, "checkpoint": trained_checkpoint},
        labels=load_checkpoint(trained_checkpoint).model.labels,
        device=DeviceInfo(kind="cpu", name="Test CPU 9000", threads=2, torch="2.13.0"),
        uar={"exit_1": 0.61, "exit_2": 0.72, "exit_3": 0.74, "exit_4": 0.77},
        latency={n: {"3": {"p50": 10.0 + b, "p95": 12.0 + b}} for b, n in enumerate(["exit_1", "exit_2", "exit_3", "exit_4"], 1)},
    )
    write_profile(str(Path(trained_checkpoint).parent / "report"), profile)
    return trained_checkpoint


def test_onnx_fp32_is_the_cut_model_within_1e4_of_torch(profiled, tmp_path):
    result, lines = run(profiled, tmp_path / "out", exit="exit_2")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.onnx", "preprocessor_config.json"]
    v = result.verification
    assert v.passed and v.source == "held-out" and "held-out clips" in v.clips and v.fp32.max_abs_diff <= 1e-4
    assert any("fp32 logits within 0.0001 of torch" in line for line in lines)
    # the graph alone, in plain onnxruntime: names, dynamic batch and sample axes
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_values"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    waves = clips(0.6, 1.3, 2.1)
    reference = torch_logits(profiled, "exit_2", waves)
    for wave, ref in zip(waves, reference):
        got = session.run(["logits"], {"input_values": np.stack([wave, wave])})[0]
        np.testing.assert_allclose(got, np.stack([ref, ref]), atol=1e-4)
    # only blocks 1..2 and head exit_2 are in the graph
    initializers = {init.name for init in onnx.load(str(out / "model.onnx")).graph.initializer}
    assert not any("encoder.layers.2." in n or "encoder.layers.3." in n or "exit_4" in n for n in initializers)
    assert any("encoder.layers.1." in n for n in initializers)


def test_int8_agrees_with_fp32_and_is_smaller(profiled, tmp_path):
    result, lines = run(profiled, tmp_path / "int8", exit="exit_3", quantize="int8")
    v = result.verification
    assert v.passed, v.lines()
    assert v.quantized.top1_agreement >= 0.98 and abs(v.quantized.uar_drop) <= 0.01
    assert any(line.strip().startswith("ok") and "int8 top-1 agreement" in line for line in lines)
    ops = onnx_ops(tmp_path / "int8" / "model.onnx")
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "DynamicQuantizeLinear"}, ops
    run(profiled, tmp_path / "fp32", exit="exit_3")
    assert (tmp_path / "int8" / "model.onnx").stat().st_size < (tmp_path / "fp32" / "model.onnx").stat().st_size
    info = json.loads((tmp_path / "int8" / "config.json").read_text())["emodistill"]
    assert (info["precision"], info["exit"], info["verification"]["passed"]) == ("int8", "exit_3", True)


def test_int8_convs_quantizes_every_conv_but_the_waveform_conv(tmp_path):
    from emodistill.inference.graph import LogitsGraph
    from emodistill.inference.onnx import conv_nodes, export_onnx, quantize_int8
    from emodistill.inference.runtime import OnnxRuntime

    model = tiny_model(exits=(1,)).cut("exit_1")
    fp32 = export_onnx(LogitsGraph(model, "exit_1"), tmp_path / "fp32.onnx", "torchscript")
    quantized, kept = conv_nodes(fp32)
    assert len(kept) == 1 and "conv_layers.0" in kept[0] and any("pos_conv" in n for n in quantized)
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", clips(1.0, 2.5, 0.7), convs=True)
    graph = onnx.load(str(int8)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    conv_inputs = {n.name: set(n.input) for n in graph.node if n.op_type == "Conv"}
    assert sum(bool(ins & dequantized) for ins in conv_inputs.values()) == len(quantized)
    logits = OnnxRuntime(str(int8), "exit_1", model.labels, "int8").logits(clips(1.0, 1.0))
    assert np.isfinite(logits).all() and logits.shape == (2, 4)


def test_gru_heads_export_and_match(tmp_path):
    """The paper's student head (GRU) goes through the TorchScript-based exporter."""
    ckpt = save_checkpoint(tiny_model(exits=(1, 2), student_head="gru"), tmp_path / "ckpt")
    result, _ = run(ckpt, tmp_path / "out", exit="exit_1")
    assert result.verification.passed and result.verification.source == "generated"
    assert "GRU" in onnx_ops(tmp_path / "out" / "model.onnx")


def test_layer_norm_conv_encoder_exports_an_attention_mask(tmp_path):
    """Backbones whose conv encoder uses LayerNorm take padded batches: the graph has
    an attention_mask input and a padded clip answers as it does alone."""
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig(arch="tiny", overrides={"feat_extract_norm": "layer"}), exits=[1])
    ckpt = save_checkpoint(build_model(cfg, ["a", "b", "c"]).eval(), tmp_path / "ckpt")
    run(ckpt, tmp_path / "out", exit="exit_1")
    assert json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())["return_attention_mask"] is True
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_values", "attention_mask"]
    x, mask = padded_batch([16000, 9000])
    batch = session.run(["logits"], {"input_values": x.numpy(), "attention_mask": mask.numpy()})[0]
    alone = session.run(["logits"], {"input_values": x[1:, :9000].numpy(), "attention_mask": mask[1:, :9000].numpy()})[0]
    np.testing.assert_allclose(batch[1:], alone, atol=1e-4)
    reference = torch_logits(ckpt, "exit_1", [x[1, :9000].numpy()])
    np.testing.assert_allclose(alone, reference, atol=1e-4)


@pytest.mark.parametrize("fmt, quantize, file", [
    ("torchscript", "none", "model.pt"),
    ("torchscript", "bf16", "model.pt"),
    ("safetensors", "none", "model.safetensors"),
    ("safetensors", "bf16", "model.safetensors"),
])
def test_torchscript_and_safetensors_exports_load_and_answer(profiled, tmp_path, fmt, quantize, file):
    from emodistill import EmotionRecognizer

    result, _ = run(profiled, tmp_path / "out", exit="exit_2", format=fmt, quantize=quantize)
    assert result.verification.passed, result.verification.lines()
    assert (tmp_path / "out" / file).exists()
    recognizer = EmotionRecognizer.from_pretrained(tmp_path / "out")
    reference = EmotionRecognizer.from_pretrained(profiled, exit="exit_2")
    wave = clips(1.2)[0]
    got, ref = recognizer.predict(wave), reference.predict(wave)
    assert got.exit == "exit_2" and got.label == ref.label
    tolerance = 1e-4 if quantize == "none" else 0.05
    assert max(abs(got.scores[k] - ref.scores[k]) for k in ref.scores) <= tolerance
    if fmt == "safetensors":  # only the cut model's tensors
        from safetensors import safe_open

        with safe_open(str(tmp_path / "out" / file), "pt") as fh:
            names = list(fh.keys())
            assert not any(n.startswith(("heads.exit_1", "heads.exit_3", "backbone.encoder.layers.2")) for n in names)
            dtypes = {fh.get_tensor(n).dtype for n in names}
        assert dtypes == ({torch.bfloat16} if quantize == "bf16" else {torch.float32})


def test_model_card_and_hf_files(profiled, tmp_path):
    run(profiled, tmp_path / "out", exit="exit_3", quantize="int8")
    card = (tmp_path / "out" / "README.md").read_text()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    pre = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    labels = load_checkpoint(profiled).model.labels
    assert card.startswith("---\n") and "pipeline_tag: audio-classification" in card
    for label in labels:
        assert f"| {label}" in card
    assert "## Training data" in card and profiled.rsplit("/", 2)[0] in card or "dataset:" in card
    assert "training folds: [0, 1]" in card and "validation (model selection) folds: [2]" in card
    assert "Test CPU 9000" in card and "**exit_3**" in card and "0.740" in card  # the profile's table
    assert "## This export" in card and "int8 top-1 agreement" in card and "## Intended use and limits" in card
    assert config["model_type"] == "wav2vec2" and config["num_hidden_layers"] == 3
    assert config["id2label"] == {str(i): label for i, label in enumerate(labels)}
    assert config["emodistill"]["latency"]["p50"] > 0 and config["emodistill"]["latency"]["device"]["kind"] == "cpu"
    assert pre["feature_extractor_type"] == "Wav2Vec2FeatureExtractor" and pre["sampling_rate"] == 16000


def test_export_errors_are_clear(profiled, tmp_path):
    with pytest.raises(ValueError, match=r"has no exit 'exit_9'.*exit_1.*exit_4"):
        run(profiled, tmp_path / "a", exit="exit_9")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(profiled, tmp_path / "taken", exit="exit_1")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    for kwargs, message in [
        ({"exit": "exit_1", "format": "torchscript", "quantize": "int8"}, "--format onnx"),
        ({"exit": "exit_1", "quantize": "bf16"}, "no bf16"),
        ({}, "exactly one of --exit or --budget-ms"),
        ({"exit": "exit_1", "budget_ms": 5}, "exactly one of"),
        ({"exit": "block3"}, "not an exit name"),
    ]:
        with pytest.raises(ValueError, match=message):
            ExportConfig(checkpoint=profiled, out=str(tmp_path / "b"), **kwargs)


def test_overwrite_replaces_out(profiled, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.bin").write_text("old")
    run(profiled, tmp_path / "out", exit="exit_1", overwrite=True)
    assert not (tmp_path / "out" / "stale.bin").exists() and (tmp_path / "out" / "model.onnx").exists()


def test_budget_picks_the_deepest_exit_measured_on_the_device(profiled, tmp_path):
    result, lines = run(profiled, tmp_path / "out", budget_ms=60000)  # onnx: the deepest is tried first
    assert result.info.exit == "exit_4" and any("exit_4" in line and "fits" in line for line in lines)
    with pytest.raises(ValueError, match=r"no exit meets 0.001 ms.*closest is exit_\d at"):
        run(profiled, tmp_path / "none", budget_ms=0.001, format="safetensors")
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_dynamo_exporter(tmp_path):
    ckpt = save_checkpoint(tiny_model(exits=(1,), student_head="mean"), tmp_path / "ckpt")
    result, _ = run(ckpt, tmp_path / "out", exit="exit_1", exporter="dynamo")
    assert result.verification.passed and "dynamo" in result.info.exporter


@pytest.mark.parametrize("frontend", ["logmel", "logmel_pitch"])
def test_log_mel_model_exports_and_matches_torch(tmp_path, frontend):
    """The recipe's log-mel front ends export (their STFT is a Conv1d with a fixed DFT basis
    in the graph) and onnxruntime answers within 1e-4 of torch, padded batch included."""
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig(arch="tiny", frontend=frontend), exits=[1, 2], student_head="stats", teacher_head="stats")
    ckpt = save_checkpoint(build_model(cfg, ["a", "b", "c"]).eval(), tmp_path / "ckpt")
    result, _ = run(ckpt, tmp_path / "out", exit="exit_1")
    assert result.verification.passed
    path = tmp_path / "out" / "model.onnx"
    assert "Conv" in onnx_ops(path) and not {"STFT", "DFT"} & onnx_ops(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, mask = padded_batch([16000, 9000], seed=2)
    x = x * 0.3
    feeds = {"input_values": x.numpy(), "attention_mask": mask.numpy()}
    feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
    batch = session.run(["logits"], feeds)[0]
    reference = torch_logits(ckpt, "exit_1", [x[0].numpy(), x[1, :9000].numpy()])
    np.testing.assert_allclose(batch, reference, atol=1e-4)
