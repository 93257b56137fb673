"""Every supported family loads through the public from_pretrained path and trains."""

from __future__ import annotations

import pytest
import torch

from conftest import LABELS, padded_batch
from emodistill.losses import LossConfig, SelfDistillationLoss
from emodistill.model import BackboneConfig, ModelConfig, arch_config, build_model


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "data2vec-audio"])
def test_local_pretrained_backbone_loads_and_trains(tmp_path, family):
    from transformers import AutoModel

    torch.manual_seed(0)
    config = arch_config("tiny", family)
    config.layerdrop = 0.1  # a saved model may ship with layer drop on: we must turn it off
    AutoModel.from_config(config).save_pretrained(tmp_path / family)

    cfg = ModelConfig(backbone=BackboneConfig(pretrained=str(tmp_path / family)), exits=[1, 2])
    model = build_model(cfg, LABELS)
    assert model.backbone.config.model_type == family
    assert model.backbone.config.layerdrop == 0.0
    saved = AutoModel.from_pretrained(tmp_path / family)
    key = "encoder.layers.0.attention.k_proj.weight"
    assert torch.equal(model.backbone.state_dict()[key], saved.state_dict()[key]), "weights come from disk"

    x, mask = padded_batch([8000, 8000, 6400, 7000], seed=3)
    labels = torch.tensor([0, 1, 2, 3])
    loss_fn = SelfDistillationLoss(LossConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = loss_fn(model(x, mask), labels)
        loss.total.backward()
        optimizer.step()
        losses.append(loss.total.item())
    assert losses[-1] < losses[0] * 0.8, losses


def test_unsupported_backbone_is_rejected(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(
        tmp_path / "bert"
    )
    with pytest.raises(ValueError, match="not supported"):
        build_model(ModelConfig(backbone=BackboneConfig(pretrained=str(tmp_path / "bert"))), LABELS)


def test_base_arch_is_wav2vec2_base_shape():
    from transformers import Wav2Vec2Config

    config = arch_config("base")
    ref = Wav2Vec2Config()
    assert (config.hidden_size, config.num_hidden_layers, config.conv_dim) == (ref.hidden_size, 12, ref.conv_dim)
