"""Exit heads: classifiers on the frame sequence of one transformer block.

Every head has the same shape of computation:

    frames (batch, frames, hidden)
      -> frame encoder (type specific: GRU / LSTM / 1x1 conv / identity)
      -> masked mean over time                     = `embedding` feature (batch, hidden)
      -> Linear(hidden, dim)                       = `linear` feature    (batch, dim)
      -> GELU -> dropout -> Linear(dim, classes)   = logits              (batch, classes)

`embedding` and `linear` are the two feature levels the feature-distillation loss can
compare. Differences from the authors' code (docs/method): the recurrent initial state
is zeros (deterministic), and there is a nonlinearity between the two linear layers.
Pooling only averages valid frames, so a padded batch gives the same answer as each
clip alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

HeadType = Literal["gru", "lstm", "conv", "mean"]
HEAD_TYPES: tuple[str, ...] = ("gru", "lstm", "conv", "mean")


def masked_mean(frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over valid frames. frames: (batch, frames, hidden); mask: (batch, frames) bool."""
    if mask is None:
        return frames.mean(dim=1)
    weights = mask.to(frames.dtype).unsqueeze(-1)  # (batch, frames, 1)
    return (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


@dataclass
class HeadOutput:
    logits: torch.Tensor  # (batch, classes)
    embedding: torch.Tensor  # (batch, hidden): pooled frame features
    linear: torch.Tensor  # (batch, dim): output of the first linear layer


class _Recurrent(nn.Module):
    """GRU/LSTM over frames (zero initial state), then LayerNorm and SELU (the paper's student)."""

    def __init__(self, cell: type[nn.RNNBase], hidden: int):
        super().__init__()
        self.rnn = cell(hidden, hidden, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.act = nn.SELU()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(frames)  # no hx: torch starts from zeros, every call
        return self.act(self.norm(out))


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the valid frames only. In training, the batch statistics (and the
    running statistics they update) come from real frames, never from padding, so a batch
    normalises the same however much padding it carries; padded frames come out as 0.
    In eval, every frame is normalised by the running statistics alone (exact anyway)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (batch, channels, frames); mask: (batch, frames) bool, True = valid."""
        if mask is None or not self.training:
            return super().forward(x)
        frames = x.transpose(1, 2)  # (batch, frames, channels)
        out = torch.zeros_like(frames)
        out[mask] = super().forward(frames[mask])  # (valid frames, channels): statistics over them only
        return out.transpose(1, 2)


class _PointwiseConv(nn.Module):
    """1x1 conv + BatchNorm (over valid frames) + ReLU over frames (the paper's "CNN" variant)."""

    takes_mask = True  # ExitHead passes the frame mask

    def __init__(self, hidden: int):
        super().__init__()
        self.conv = nn.Conv1d(hidden, hidden, kernel_size=1)
        self.norm = MaskedBatchNorm1d(hidden)
        self.act = nn.ReLU()

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = frames.transpose(1, 2)  # (batch, hidden, frames)
        return self.act(self.norm(self.conv(x), mask)).transpose(1, 2)


def _frame_encoder(head_type: str, hidden: int) -> nn.Module:
    if head_type == "gru":
        return _Recurrent(nn.GRU, hidden)
    if head_type == "lstm":
        return _Recurrent(nn.LSTM, hidden)
    if head_type == "conv":
        return _PointwiseConv(hidden)
    if head_type == "mean":
        return nn.Identity()
    raise ValueError(f"unknown head type {head_type!r}; choose one of {HEAD_TYPES}")


class ExitHead(nn.Module):
    """One exit's classifier. ``mean`` is the paper's teacher head, ``gru`` its student head."""

    def __init__(self, head_type: str, hidden: int, num_labels: int, dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.head_type = head_type
        self.frames = _frame_encoder(head_type, hidden)
        self.proj = nn.Linear(hidden, dim)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_labels)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None) -> HeadOutput:
        # a frame encoder that normalises across frames (`takes_mask`) must see the mask
        encoded = self.frames(frames, mask) if getattr(self.frames, "takes_mask", False) else self.frames(frames)
        embedding = masked_mean(encoded, mask)  # (batch, hidden)
        linear = self.proj(self.dropout(embedding))  # (batch, dim)
        logits = self.classifier(self.dropout(self.act(linear)))  # (batch, classes)
        return HeadOutput(logits=logits, embedding=embedding, linear=linear)
