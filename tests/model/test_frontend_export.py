"""The log-mel front ends' real-valued STFT (a Conv1d with a fixed windowed DFT basis, what
ONNX exporters accept) equals torch.stft / torch.fft.rfft, and changes no checkpoint."""

from __future__ import annotations

import pytest
import torch

from conftest import padded_batch
from emodistill.model.frontend import LOGMEL, LogMelFrontEnd


def front_end(pitch: bool) -> LogMelFrontEnd:
    torch.manual_seed(0)
    return LogMelFrontEnd(LOGMEL["conv_dim"], LOGMEL["conv_kernel"], LOGMEL["conv_stride"], pitch=pitch).eval()


def reference_log_mel(fe: LogMelFrontEnd, x: torch.Tensor) -> torch.Tensor:
    """The log-mel spectrogram as torch.stft computes it (the front end's definition)."""
    if fe.pitch:
        frames = x.unfold(-1, fe.n_fft, fe.hop) * fe.window
        spec = torch.fft.rfft(frames, n=2 * fe.n_fft).transpose(1, 2)
    else:
        spec = torch.stft(x, fe.n_fft, fe.hop, window=fe.window, center=False, return_complex=True)
    return torch.log(torch.matmul(fe.mel, spec.abs().square()) + 1e-6)


def random_audio() -> torch.Tensor:
    """Noise at three levels, zero-padded as a batch is (2 s, 1.2 s, 0.4 s of 2 s)."""
    x, mask = padded_batch([32000, 19000, 6543], seed=3)
    x = x * torch.tensor([[1.0], [0.05], [3.0]]) * mask
    return x


@pytest.mark.parametrize("pitch", [False, True], ids=["logmel", "logmel_pitch"])
def test_real_valued_stft_equals_torch_stft(pitch):
    fe = front_end(pitch)
    x = random_audio()
    with torch.inference_mode():
        conv, fft = fe.power(x, real_valued=True), fe.power(x, real_valued=False)
        assert conv.shape == fft.shape
        torch.testing.assert_close(conv, fft, rtol=1e-4, atol=1e-4 * float(fft.abs().max()))
        reference = reference_log_mel(fe, x)
        fast = fe.log_mel(x)  # eager: the FFT
        exporting = torch.jit.trace(lambda v: fe.log_mel(v), (x,), check_trace=False)(x)  # traced: the Conv1d
    assert (fast - reference).abs().max() < 1e-4
    assert (exporting - reference).abs().max() < 1e-4
    # the clips' padding stays silent: the padded frames are the floor in both
    assert torch.equal(exporting[1, :, -20:], torch.full_like(exporting[1, :, -20:], torch.log(torch.tensor(1e-6))))


def test_pitch_channels_are_the_same_either_way():
    fe = front_end(True)
    x = random_audio()
    with torch.inference_mode():
        eager = fe.prosody(x)
        traced = torch.jit.trace(lambda v: fe.prosody(v), (x,), check_trace=False)(x)
    # voicing and pitch pick a lag by argmax: equal unless two lags tie to rounding
    assert (eager - traced).abs().amax(dim=(0, 2)).max() < 1e-3
    assert (eager - traced).abs().median() < 1e-5


def test_the_dft_basis_is_no_weight():
    fe = front_end(True)
    assert not {"dft", "window", "window_sq", "mel"} & set(fe.state_dict())


def test_a_model_that_keeps_the_level_keeps_it_in_its_onnx_graph(tmp_path):
    """`normalize_waveform: false` (the CPU recipe): the recording level reaches the model, in
    torch and in the exported graph alike; with normalisation a louder copy answers the same."""
    import onnxruntime as ort

    from conftest import LABELS
    from emodistill.inference.graph import LogitsGraph
    from emodistill.inference.onnx import export_onnx
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    x, mask = padded_batch([16000, 11000], seed=5)
    louder = 8.0 * x
    for keep_level in (True, False):
        torch.manual_seed(0)
        cfg = ModelConfig(backbone=BackboneConfig(arch="tiny", frontend="logmel"), exits=[1], student_head="stats",
                          teacher_head="stats", normalize_waveform=not keep_level)
        graph = LogitsGraph(build_model(cfg, LABELS).eval(), "exit_1", with_mask=True)
        path = export_onnx(graph, tmp_path / f"keep_{keep_level}.onnx", exporter="torchscript")  # the quick exporter
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for values in (x, louder):
            with torch.inference_mode():
                expected = graph(values, mask).numpy()
            got = session.run(None, {"input_values": values.numpy(), "attention_mask": mask.long().numpy()})[0]
            torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), rtol=1e-4, atol=1e-4)
        with torch.inference_mode():
            quiet_logits, loud_logits = graph(x, mask), graph(louder, mask)
        assert torch.allclose(quiet_logits, loud_logits, atol=1e-4) != keep_level
