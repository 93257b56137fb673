"""`EmotionRecognizer`: one call from audio to label, the training decoder, bad audio,
exit choice by latency budget on this device, exported directories."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import tone, write_audio
from emodistill.checkpoint import load_checkpoint
from emodistill.data.audio import AudioError
from emodistill.exit_profile import DeviceInfo, make_profile, write_profile


def test_import_emodistill_stays_cheap():
    code = "import sys, emodistill; assert 'torch' not in sys.modules; emodistill.EmotionRecognizer; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.fixture(scope="module")
def recognizer(trained_checkpoint):
    from emodistill import EmotionRecognizer

    return EmotionRecognizer.from_pretrained(trained_checkpoint, exit="exit_2")


def test_predict_a_path_bytes_or_an_array(recognizer, trained_checkpoint, tmp_path):
    wave = tone(1.5, freq=300, seed=3)
    path = write_audio(tmp_path / "clip.wav", wave)
    from_path = recognizer.predict(path)
    from_bytes = recognizer.predict(path.read_bytes())
    from_array = recognizer.predict(wave, sample_rate=16000)
    model = load_checkpoint(trained_checkpoint, exit="exit_2").model
    with torch.inference_mode():
        probs = torch.softmax(model(torch.from_numpy(wave)[None]).exits["exit_2"].logits, -1)[0].numpy()
    for result in [from_path, from_bytes, from_array]:
        assert result.exit == "exit_2" and result.latency_ms > 0 and result.seconds == 1.5
        assert list(result.scores) == recognizer.labels and result.label == recognizer.labels[int(probs.argmax())]
        np.testing.assert_allclose(list(result.scores.values()), probs, atol=2e-5)
    assert set(from_path.to_dict()) >= {"label", "scores", "exit", "latency_ms"}


def test_any_rate_and_channel_count_through_the_training_decoder(recognizer, tmp_path):
    wave16 = tone(1.2, rate=16000, freq=200, seed=1)
    stereo44 = tone(1.2, rate=44100, freq=200, seed=1, channels=2)
    flac = write_audio(tmp_path / "clip.flac", stereo44, rate=44100)
    a, b = recognizer.predict(wave16), recognizer.predict(flac)
    c = recognizer.predict(stereo44, sample_rate=44100)  # an array of (samples, channels)
    d = recognizer.predict(torch.from_numpy(stereo44.T.copy()), sample_rate=44100)  # (channels, samples), torchaudio-style
    assert a.label == b.label == c.label == d.label
    assert abs(b.seconds - 1.2) < 1e-3 and abs(c.seconds - 1.2) < 1e-3


@pytest.mark.parametrize("audio, reason", [
    (np.zeros(16000, dtype=np.float32), "silent"),
    (np.full(16000, np.nan, dtype=np.float32), "non_finite"),
    (tone(0.1), "too_short"),
    (tone(31.0), "too_long"),
    (b"", "empty"),
    (b"RIFF\x00\x00garbage that is not audio", "unreadable"),
    ("/nonexistent/clip.wav", "not_found"),
])
def test_bad_audio_raises_with_a_reason(recognizer, audio, reason):
    with pytest.raises(AudioError) as err:
        recognizer.predict(audio)
    assert err.value.reason == reason


def _profile_here(checkpoint_dir, latency_p95: dict[str, float], device: DeviceInfo):
    profile = make_profile(
        model={"name": "wav2vec2-tiny", "version": None, "checkpoint": str(checkpoint_dir)},
        labels=load_checkpoint(checkpoint_dir).model.labels,
        device=device,
        uar={n: None for n in latency_p95},
        latency={n: {"3": {"p50": ms * 0.8, "p95": ms}} for n, ms in latency_p95.items()},
    )
    write_profile(str(checkpoint_dir), profile)  # exit_profile.json inside the checkpoint


def test_budget_uses_the_profile_measured_on_this_device(trained_checkpoint, tmp_path):
    from emodistill import EmotionRecognizer

    ckpt = shutil.copytree(trained_checkpoint, tmp_path / "ckpt")
    torch.set_num_threads(2)
    _profile_here(ckpt, {"exit_1": 10.0, "exit_2": 20.0, "exit_3": 30.0, "exit_4": 40.0}, DeviceInfo.current("cpu"))
    chosen = EmotionRecognizer.from_pretrained(ckpt, budget_ms=35, threads=2)
    assert chosen.exit == "exit_3" and chosen.selection.latencies.source == "exit_profile.json"
    assert chosen.describe()["selection"]["budget_ms"] == 35
    with pytest.raises(ValueError, match=r"no exit meets 5 ms.*closest is exit_1 at 10.0 ms"):
        EmotionRecognizer.from_pretrained(ckpt, budget_ms=5, threads=2)


def test_budget_measures_now_when_the_profile_is_from_another_device(trained_checkpoint, tmp_path):
    from emodistill import EmotionRecognizer

    ckpt = shutil.copytree(trained_checkpoint, tmp_path / "ckpt")
    gpu = DeviceInfo(kind="cuda", name="NVIDIA H100", threads=None, torch="2.13.0")
    _profile_here(ckpt, {"exit_1": 0.1, "exit_2": 0.2, "exit_3": 0.3, "exit_4": 0.4}, gpu)
    chosen = EmotionRecognizer.from_pretrained(ckpt, budget_ms=60000)
    assert chosen.exit == "exit_4" and chosen.selection.latencies.source == "measured now"
    assert all(ms > 0.5 for ms in chosen.selection.latencies.latency_ms.values())  # CPU numbers, not the GPU's


def test_an_exported_onnx_directory_loads(trained_checkpoint, recognizer, tmp_path):
    from emodistill import EmotionRecognizer
    from emodistill.inference.export import ExportConfig, export

    export(ExportConfig(checkpoint=trained_checkpoint, out=str(tmp_path / "onnx"), exit="exit_2", repeats=3))
    onnx = EmotionRecognizer.from_pretrained(tmp_path / "onnx")
    assert (onnx.exit, onnx.runtime.name) == ("exit_2", "onnxruntime-fp32")
    buf = io.BytesIO()
    sf.write(buf, tone(2.0, rate=22050, freq=250), 22050, format="WAV")
    a, b = onnx.predict(buf.getvalue()), recognizer.predict(buf.getvalue())
    assert a.label == b.label and max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-4
    with pytest.raises(ValueError, match="export of exit_2 only"):
        EmotionRecognizer.from_pretrained(tmp_path / "onnx", exit="exit_3")
    with pytest.raises(ValueError, match="budget_ms chooses among a checkpoint's exits"):
        EmotionRecognizer.from_pretrained(tmp_path / "onnx", budget_ms=50)


def test_loading_errors_are_clear(trained_checkpoint, tmp_path):
    from emodistill import EmotionRecognizer

    with pytest.raises(ValueError, match="exit or budget_ms, not both"):
        EmotionRecognizer.from_pretrained(trained_checkpoint, exit="exit_1", budget_ms=10)
    with pytest.raises(FileNotFoundError, match="no emodistill checkpoint or export"):
        EmotionRecognizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="CUDA is not available|cuda"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        EmotionRecognizer.from_pretrained(trained_checkpoint, device="cuda")
