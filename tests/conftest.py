"""Shared fixtures: tiny randomly initialised models, fixed clips, deterministic torch."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

LABELS = ["anger", "happiness", "neutral", "sadness"]


@pytest.fixture
def labels() -> list[str]:
    return list(LABELS)


def tiny_model(family: str = "wav2vec2", exits=(1, 2, 3), student_head="gru", teacher_head="mean", seed: int = 0):
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(
        backbone=BackboneConfig(arch="tiny", family=family),
        exits=list(exits),
        student_head=student_head,
        teacher_head=teacher_head,
    )
    return build_model(cfg, LABELS).eval()


@pytest.fixture
def model():
    return tiny_model()


def padded_batch(lengths, seed: int = 0):
    """(waveforms (batch, max_len), mask (batch, max_len)) with zeros past each length."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    x = torch.zeros(len(lengths), width)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, generator=gen)
        mask[i, :n] = 1
    return x, mask
