"""The CPU recipe's model parts: the log-mel front-end, the `small` shape, statistics heads."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from conftest import LABELS, padded_batch
from emodistill.checkpoint import load_checkpoint, save_checkpoint
from emodistill.model import BackboneConfig, ModelConfig, build_model, count_parameters
from emodistill.model.frontend import LogMelFrontEnd, mel_filterbank
from emodistill.model.heads import ExitHead, masked_stats


def recipe_model(family="wav2vec2", arch="tiny", head="stats", teacher="stats", frontend="logmel", seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        backbone=BackboneConfig(arch=arch, family=family, frontend=frontend),
        exits=[1, 2, 3],
        student_head=head,
        teacher_head=teacher,
    )
    return build_model(cfg, LABELS).eval()


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm"])
@pytest.mark.parametrize("head", ["stats", "attentive", "mean"])
def test_logmel_padded_batch_equals_clips_one_by_one(family, head):
    model = recipe_model(family, head=head, teacher=head)
    assert isinstance(model.backbone.feature_extractor, LogMelFrontEnd)
    lengths = [16000, 9000, 4321]
    x, mask = padded_batch(lengths, seed=1)
    batch = model(x, mask)
    for i, n in enumerate(lengths):
        alone = model(x[i : i + 1, :n])
        for name in model.exit_names:
            torch.testing.assert_close(batch.exits[name].logits[i], alone.exits[name].logits[0], rtol=0, atol=1e-4)


def test_conv_frontend_with_statistics_heads_padded_equals_alone():
    model = recipe_model(head="attentive", teacher="stats", frontend="conv")
    x, mask = padded_batch([12000, 5000], seed=2)
    batch = model(x, mask)
    for i, n in enumerate([12000, 5000]):
        torch.testing.assert_close(batch.teacher.logits[i], model(x[i : i + 1, :n]).teacher.logits[0], rtol=0, atol=1e-4)


def test_logmel_frames_follow_the_configured_geometry():
    model = recipe_model(arch="small")
    c = model.backbone.config
    assert c.frontend == "logmel" and model.num_frames_per_second == 50.0
    x, mask = padded_batch([16000, 8000])
    features = model.backbone.feature_extractor(x)
    assert features.shape[:2] == (2, c.conv_dim[-1])
    out = model(x, mask)
    # what transformers computes from conv_kernel / conv_stride is what the front-end gives
    expected = model.backbone._get_feat_extract_output_lengths(torch.tensor([16000, 8000])).tolist()
    assert out.frame_lengths == expected and features.shape[2] == expected[0]


def test_mel_filterbank_has_no_empty_band():
    bank = mel_filterbank(512, 64)
    assert bank.shape == (64, 257) and (bank.sum(axis=1) > 0.99).all() and (bank >= 0).all()
    centres = bank.argmax(axis=1)
    assert (centres[1:] >= centres[:-1]).all(), "bands rise in frequency"


def test_small_shape_pays_for_depth_not_for_its_front_end():
    model = recipe_model(arch="small")
    block = count_parameters(model.backbone.encoder.layers[0])
    frontend = count_parameters(model.backbone.feature_extractor)
    assert frontend < block / 4
    cut = model.cut("exit_1")
    assert len(cut.backbone.encoder.layers) == 1 and isinstance(cut.backbone.feature_extractor, LogMelFrontEnd)
    ran: list[int] = []
    for i, layer in enumerate(model.backbone.encoder.layers):
        layer.register_forward_hook(lambda *_a, i=i: ran.append(i + 1))
    model(padded_batch([8000])[0], exits=["exit_1"])
    assert ran == [1], "an exit_1 answer runs one block"


def test_checkpoint_rebuilds_the_logmel_model_and_its_cuts(tmp_path):
    model = recipe_model(arch="small", head="attentive", teacher="stats")
    path = save_checkpoint(model, tmp_path / "ckpt")
    x, mask = padded_batch([9000, 16000], seed=3)
    full = model(x, mask)
    loaded = load_checkpoint(path)
    assert isinstance(loaded.model.backbone.feature_extractor, LogMelFrontEnd)
    for name in model.exit_names:
        torch.testing.assert_close(loaded.model(x, mask).exits[name].logits, full.exits[name].logits, rtol=0, atol=1e-6)
    cut = load_checkpoint(path, exit="exit_1").model
    assert len(cut.backbone.encoder.layers) == 1
    torch.testing.assert_close(cut(x, mask).exits["exit_1"].logits, full.exits["exit_1"].logits, rtol=0, atol=1e-6)


def test_logmel_needs_a_random_init_backbone():
    with pytest.raises(ValidationError, match="random init"):
        BackboneConfig(pretrained="facebook/wav2vec2-base", frontend="logmel")
    with pytest.raises(ValidationError):
        BackboneConfig(arch="tiny", frontend="mfcc")


def test_statistics_pooling_is_the_mean_and_std_of_valid_frames():
    frames = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    mean, std = masked_stats(frames, mask)[0].tolist()
    assert mean == pytest.approx(2.0) and std == pytest.approx(1.0, abs=1e-4)
    head = ExitHead("attentive", hidden=8, num_labels=3, dim=16).eval()
    x = torch.randn(1, 5, 8)
    padded = torch.cat([x, 1e3 * torch.ones(1, 4, 8)], dim=1)  # garbage in the padding
    out = head(padded, torch.tensor([[True] * 5 + [False] * 4]))
    assert out.embedding.shape == (1, 16)
    torch.testing.assert_close(out.logits, head(x, None).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("f0", [70.0, 120.0, 220.0, 400.0])
def test_pitch_channels_find_the_pitch_of_a_voiced_sound(f0):
    import numpy as np

    from emodistill.model.frontend import LOGMEL

    frontend = LogMelFrontEnd(LOGMEL["conv_dim"], LOGMEL["conv_kernel"], LOGMEL["conv_stride"], pitch=True)
    t = np.arange(16000) / 16000
    rng = np.random.default_rng(0)
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) + 0.05 * rng.standard_normal(t.size)
    voicing, voiced_log_f0, energy = frontend.prosody(torch.tensor(wave, dtype=torch.float32)[None])[0]
    assert voicing.median() > 0.9
    found = 150.0 * 2 ** (voiced_log_f0 / voicing).median().item()
    assert found == pytest.approx(f0, rel=0.03)
    noise = frontend.prosody(torch.tensor(rng.standard_normal(16000), dtype=torch.float32)[None])[0]
    assert noise[0].median() < 0.6, "noise is not voiced"
    assert torch.isfinite(energy).all()


def test_logmel_pitch_padded_batch_equals_clips_one_by_one():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig(arch="tiny", frontend="logmel_pitch"), exits=[2], student_head="stats", teacher_head="stats")
    model = build_model(cfg, LABELS).eval()
    lengths = [16000, 7000]
    x, mask = padded_batch(lengths, seed=4)
    batch = model(x, mask)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(batch.teacher.logits[i], model(x[i : i + 1, :n]).teacher.logits[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("pitch", [False, True])
def test_vtlp_moves_the_spectrum_in_training_only(pitch):
    import numpy as np

    from emodistill.model.frontend import LOGMEL

    frontend = LogMelFrontEnd(LOGMEL["conv_dim"], LOGMEL["conv_kernel"], LOGMEL["conv_stride"], pitch=pitch).eval()
    t = np.arange(8000) / 16000

    def tone(hz):
        return torch.tensor(np.sin(2 * np.pi * hz * t), dtype=torch.float32)[None]

    def peak_band(log_mel):
        return int(log_mel[0].mean(dim=1).argmax())

    plain, higher = frontend.log_mel(tone(1000.0)), frontend.log_mel(tone(1200.0))
    frontend.vtlp = (1.2, 1.2)
    assert torch.equal(frontend.log_mel(tone(1000.0)), plain), "a module in eval() mode is never warped"
    frontend.train()
    # a 1 kHz tone read on a stretched axis lands where a 1.2 kHz tone does
    warped = frontend.log_mel(tone(1000.0))
    assert peak_band(warped) == peak_band(higher) != peak_band(plain)
    frontend.vtlp = (1.0, 1.0)
    torch.testing.assert_close(frontend.log_mel(tone(1000.0)), plain, rtol=0, atol=1e-5)


def test_vtlp_draws_a_factor_per_clip_from_torchs_seeded_generator():
    from emodistill.model.frontend import LOGMEL

    frontend = LogMelFrontEnd(LOGMEL["conv_dim"], LOGMEL["conv_kernel"], LOGMEL["conv_stride"]).train()
    frontend.vtlp = (0.85, 1.15)
    x = torch.randn(1, 8000).repeat(4, 1)  # the same clip four times
    torch.manual_seed(3)
    a = frontend.log_mel(x)
    torch.manual_seed(3)
    torch.testing.assert_close(frontend.log_mel(x), a, rtol=0, atol=0)
    assert len({round(float(row.sum()), 3) for row in a}) > 1, "each clip of the batch gets its own factor"
