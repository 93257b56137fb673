"""The early-exit model: exits, depth-limited runs, cutting, padding, heads."""

from __future__ import annotations

import pytest
import torch

from conftest import LABELS, padded_batch, tiny_model
from emodistill.model import BackboneConfig, ModelConfig, build_model, count_parameters, masked_mean


def test_forward_returns_every_exit_keyed_by_block(model):
    x, _ = padded_batch([8000, 8000])
    out = model(x)
    assert list(out.exits) == ["exit_1", "exit_2", "exit_3", "exit_4"]
    assert out.teacher is out.exits["exit_4"]
    hidden = model.backbone.config.hidden_size
    for name, ex in out.exits.items():
        assert ex.block == int(name.split("_")[1])
        assert ex.logits.shape == (2, len(LABELS))
        assert ex.embedding.shape == (2, hidden)
        assert ex.linear.shape == (2, 256)


def test_last_block_is_always_the_teacher():
    model = tiny_model(exits=[2])
    assert model.exit_names == ["exit_2", "exit_4"]
    assert model.spec.heads == {"exit_2": "gru", "exit_4": "mean"}
    plain = tiny_model(exits=[])
    assert plain.exit_names == ["exit_4"]


def test_bad_exits_are_rejected():
    with pytest.raises(ValueError, match="deeper than"):
        build_model(ModelConfig(backbone=BackboneConfig(arch="tiny"), exits=[9]), LABELS)
    with pytest.raises(ValueError, match="counted from 1"):
        ModelConfig(exits=[0])
    with pytest.raises(ValueError, match="at least 2 labels"):
        build_model(ModelConfig(), ["only"])
    with pytest.raises(ValueError, match="unknown exits"):
        tiny_model()(torch.zeros(1, 4000), exits=["exit_9"])


def test_layerdrop_is_forced_off():
    model = build_model(ModelConfig(backbone=BackboneConfig(arch="base", overrides={"hidden_dropout": 0.0})), LABELS)
    assert model.backbone.config.layerdrop == 0.0
    with pytest.raises(ValueError, match="layerdrop"):
        BackboneConfig(arch="tiny", overrides={"layerdrop": 0.1})


def test_running_to_an_exit_never_runs_later_blocks(model):
    ran: list[int] = []
    for i, layer in enumerate(model.backbone.encoder.layers):
        layer.register_forward_hook(lambda *_a, i=i: ran.append(i + 1))
    x, _ = padded_batch([8000])
    out = model(x, exits=["exit_2"])
    assert list(out.exits) == ["exit_2"]
    assert ran == [1, 2]
    ran.clear()
    model(x)
    assert ran == [1, 2, 3, 4]
    assert len(model.backbone.encoder.layers) == 4, "the full model keeps its blocks"


def test_depth_limited_run_matches_full_run(model):
    x, mask = padded_batch([12000, 7000])
    full = model(x, mask)
    for name in model.exit_names:
        alone = model(x, mask, exits=[name]).exits[name]
        torch.testing.assert_close(alone.logits, full.exits[name].logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_cut_model_is_smaller_and_gives_the_same_logits(family):
    model = tiny_model(family=family)
    x, mask = padded_batch([9000, 16000])
    full = model(x, mask)
    for name in model.exit_names:
        cut = model.cut(name)
        block = int(name.split("_")[1])
        assert len(cut.backbone.encoder.layers) == block
        assert cut.exit_names == [name]
        assert not any(k.startswith(f"backbone.encoder.layers.{block}.") for k in cut.state_dict())
        assert not any(k.startswith("heads.") and not k.startswith(f"heads.{name}.") for k in cut.state_dict())
        torch.testing.assert_close(cut(x, mask).exits[name].logits, full.exits[name].logits, rtol=0, atol=1e-6)
    sizes = [count_parameters(model.cut(n)) for n in model.exit_names]
    assert sizes == sorted(sizes) and sizes[-1] < count_parameters(model)
    layer = count_parameters(model.backbone.encoder.layers[1])
    assert sizes[1] - sizes[0] >= layer, "each deeper cut carries at least one more block"


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "data2vec-audio"])
@pytest.mark.parametrize("head", ["gru", "lstm", "conv", "mean"])
def test_padded_batch_equals_clips_one_by_one(family, head):
    """data2vec-audio's stacked positional convs leaked padding into the last real frames
    (about 1e-2 off); the padded frames are now zeroed between those convs."""
    model = tiny_model(family=family, student_head=head)
    lengths = [16000, 9000, 4321]
    x, mask = padded_batch(lengths, seed=1)
    batch = model(x, mask)
    for i, n in enumerate(lengths):
        alone = model(x[i : i + 1, :n])
        for name in model.exit_names:
            torch.testing.assert_close(batch.exits[name].logits[i], alone.exits[name].logits[0], rtol=0, atol=1e-4)


def test_heads_are_deterministic_in_eval(model):
    x, mask = padded_batch([8000, 5000])
    a, b = model(x, mask), model(x, mask)
    for name in model.exit_names:
        assert torch.equal(a.exits[name].logits, b.exits[name].logits)


def test_masked_mean_ignores_padding():
    frames = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(frames, torch.tensor([[True, True, False]])).item() == 2.0
    assert masked_mean(frames, None).item() == pytest.approx(104 / 3)


def test_frozen_feature_encoder_gets_no_gradient():
    cfg = ModelConfig(backbone=BackboneConfig(arch="tiny", freeze_feature_encoder=True), exits=[2])
    model = build_model(cfg, LABELS).train()
    x, mask = padded_batch([8000, 6000])
    model(x, mask).teacher.logits.sum().backward()
    assert all(p.grad is None for p in model.backbone.feature_extractor.parameters())
    assert model.backbone.encoder.layers[0].attention.q_proj.weight.grad is not None


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = build_model(ModelConfig(backbone=BackboneConfig(arch="tiny", overrides={"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0}), exits=[2], head_dropout=0.0), LABELS)
    ckpt_cfg = ModelConfig(
        backbone=BackboneConfig(arch="tiny", gradient_checkpointing=True, overrides={"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0}),
        exits=[2],
        head_dropout=0.0,
    )
    ckpt = build_model(ckpt_cfg, LABELS)
    ckpt.load_state_dict(plain.state_dict())
    x, mask = padded_batch([8000, 8000])
    for m in (plain.train(), ckpt.train()):
        out = m(x, mask)
        (out.exits["exit_2"].logits.sum() + out.teacher.logits.sum()).backward()
    g1 = plain.backbone.encoder.layers[0].feed_forward.output_dense.weight.grad
    g2 = ckpt.backbone.encoder.layers[0].feed_forward.output_dense.weight.grad
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "family,stable",
    [("wav2vec2", False), ("wav2vec2", True), ("hubert", False), ("wavlm", False), ("wavlm", True), ("data2vec-audio", False)],
)
def test_resume_from_a_shallow_exit_equals_a_run_from_the_waveform(family, stable):
    """A cascade continues from block k's output through blocks k+1.. only; the answer is
    the one the deeper exit gives from the waveform (pre- and post-norm encoders, WavLM's
    shared position bias), and blocks 1..k do not run again."""
    torch.manual_seed(0)
    overrides = {"do_stable_layer_norm": True, "feat_extract_norm": "layer"} if stable else {}
    cfg = ModelConfig(
        backbone=BackboneConfig(arch="tiny", family=family, overrides=overrides), exits=[1, 2, 3], student_head="mean"
    )
    model = build_model(cfg, LABELS).eval()
    x, mask = padded_batch([8000, 5600])
    with torch.no_grad():
        direct = model(x, mask)
        shallow = model(x, mask, exits=["exit_1"])
        ran: list[int] = []
        hooks = [
            layer.register_forward_hook(lambda *_a, i=i: ran.append(i + 1))
            for i, layer in enumerate(model.backbone.encoder.layers)
        ]
        resumed = model.resume(shallow.hidden["exit_1"], 1, shallow.frame_mask)
        # one clip alone, its own frames only (what the serving cascade sends on)
        n = shallow.frame_lengths[1]
        alone = model.cut("exit_3").resume(shallow.hidden["exit_1"][1:2, :n], 1)
        for h in hooks:
            h.remove()
    assert ran == [2, 3, 4, 2, 3]
    assert list(resumed.exits) == ["exit_2", "exit_3", "exit_4"]
    for name in resumed.exits:
        torch.testing.assert_close(resumed.exits[name].logits, direct.exits[name].logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alone.exits["exit_3"].logits, direct.exits["exit_3"].logits[1:2], atol=1e-4, rtol=1e-4)


def test_resume_rejects_impossible_spans(model):
    x, _ = padded_batch([8000])
    hidden = model(x, exits=["exit_2"]).hidden["exit_2"]
    with pytest.raises(ValueError, match="cannot resume"):
        model.resume(hidden, 4)
    with pytest.raises(ValueError, match="cannot resume"):
        model.resume(hidden, 2, exits=["exit_1"])


def test_conv_head_batchnorm_ignores_padding_in_training():
    """The conv head's BatchNorm took its batch statistics over padded frames too, so a
    training step depended on how much padding the batch carried, and the running
    statistics learnt the padding."""
    from emodistill.model import ExitHead

    torch.manual_seed(0)
    frames = torch.randn(2, 12, 8)  # (batch, frames, hidden)
    short = 5
    heads = []
    outs = []
    for width in (12, 30):  # the same two clips, padded to 12 and to 30 frames
        torch.manual_seed(1)
        head = ExitHead("conv", hidden=8, num_labels=3, dim=16, dropout=0.0).train()
        x = torch.zeros(2, width, 8)
        x[:, :12] = frames
        x[1, short:] = 0.0
        mask = torch.zeros(2, width, dtype=torch.bool)
        mask[0, :12] = True
        mask[1, :short] = True
        outs.append(head(x, mask).logits)
        heads.append(head)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(heads[0].frames.norm.running_mean, heads[1].frames.norm.running_mean)
    # the statistics are those of the 17 real frames
    with torch.no_grad():
        conv = heads[0].frames.conv(torch.cat([frames[0], frames[1, :short]]).T.unsqueeze(0))[0].T  # (17, hidden)
    momentum = heads[0].frames.norm.momentum
    torch.testing.assert_close(heads[0].frames.norm.running_mean, momentum * conv.mean(0), rtol=1e-5, atol=1e-6)


def test_conv_head_checkpoints_keep_their_keys():
    head = tiny_model(student_head="conv").heads["exit_1"]
    assert {"frames.norm.running_mean", "frames.norm.running_var", "frames.norm.weight"} <= set(head.state_dict())


def test_legacy_gradient_checkpointing_in_a_pretrained_config_is_ignored(tmp_path):
    """facebook/wav2vec2-base's config.json still says `gradient_checkpointing: true`;
    from_pretrained turned activation checkpointing on without being asked."""
    import json

    from transformers import AutoModel

    from emodistill.model import arch_config, load_backbone

    AutoModel.from_config(arch_config("tiny")).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["gradient_checkpointing"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))

    def checkpointing(model) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())

    assert not checkpointing(load_backbone(BackboneConfig(pretrained=str(tmp_path))))
    assert checkpointing(load_backbone(BackboneConfig(pretrained=str(tmp_path), gradient_checkpointing=True)))
