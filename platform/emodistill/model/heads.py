"""Exit heads: classifiers on the frame sequence of one transformer block.

Every head has the same shape of computation:

    frames (batch, frames, hidden)
      -> frame encoder (type specific: GRU / LSTM / 1x1 conv / identity)
      -> pooling over valid frames (masked mean)   = `embedding` feature (batch, hidden)
      -> Linear(hidden, dim)                       = `linear` feature    (batch, dim)
      -> GELU -> dropout -> Linear(dim, classes)   = logits              (batch, classes)

The ``stats`` and ``attentive`` heads pool differently: masked mean and standard deviation
of the frames (x-vector statistics pooling), plain or weighted by a learned attention
over frames (attentive statistics pooling, Okabe et al. 2018), so their `embedding` is
twice as wide (2 x hidden). Their frame encoder is the identity: the spread of a feature
over the utterance (how much pitch and loudness move) is what the mean alone loses.

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

HeadType = Literal["gru", "lstm", "conv", "mean", "stats", "attentive"]
HEAD_TYPES: tuple[str, ...] = ("gru", "lstm", "conv", "mean", "stats", "attentive")
STATS_HEADS: tuple[str, ...] = ("stats", "attentive")  # embedding = [mean; std], 2 x hidden


def pooled_width(head_type: str, hidden: int) -> int:
    """Width of a head's `embedding` feature over frames ``hidden`` wide."""
    return 2 * hidden if head_type in STATS_HEADS else hidden


def masked_mean(frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over valid frames. frames: (batch, frames, hidden); mask: (batch, frames) bool."""
    if mask is None:
        return frames.mean(dim=1)
    weights = mask.to(frames.dtype).unsqueeze(-1)  # (batch, frames, 1)
    return (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def masked_stats(frames: torch.Tensor, mask: torch.Tensor | None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """[mean; std] over valid frames, optionally weighted: (batch, frames, hidden) -> (batch, 2 * hidden).

    ``weights`` (batch, frames) sum to 1 over each row's valid frames (attentive pooling);
    without them every valid frame counts the same."""
    if weights is None:
        valid = torch.ones_like(frames[..., 0]) if mask is None else mask.to(frames.dtype)
        weights = valid / valid.sum(dim=1, keepdim=True).clamp_min(1.0)
    w = weights.unsqueeze(-1)  # (batch, frames, 1)
    mean = (frames * w).sum(dim=1)
    var = ((frames - mean.unsqueeze(1)).square() * w).sum(dim=1)
    return torch.cat([mean, torch.sqrt(var + 1e-5)], dim=-1)


class _StatsPool(nn.Module):
    """Statistics pooling: masked mean and standard deviation over frames."""

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return masked_stats(frames, mask)


class _AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling: a frame scorer (Linear -> tanh -> Linear) gives a softmax
    over valid frames; the weighted mean and standard deviation are the pooled feature."""

    def __init__(self, hidden: int, attention_dim: int = 64):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(hidden, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores = self.score(frames).squeeze(-1)  # (batch, frames)
        if mask is not None:
            scores = scores.masked_fill(~mask.bool(), float("-inf"))
        return masked_stats(frames, mask, torch.softmax(scores.float(), dim=1).to(frames.dtype))


class _MeanPool(nn.Module):
    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return masked_mean(frames, mask)


def _pooling(head_type: str, hidden: int) -> nn.Module:
    if head_type == "stats":
        return _StatsPool()
    if head_type == "attentive":
        return _AttentiveStatsPool(hidden)
    return _MeanPool()


@dataclass
class HeadOutput:
    logits: torch.Tensor  # (batch, classes)
    embedding: torch.Tensor  # (batch, pooled_width): pooled frame features
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
    if head_type in ("mean", *STATS_HEADS):
        return nn.Identity()
    raise ValueError(f"unknown head type {head_type!r}; choose one of {HEAD_TYPES}")


class ExitHead(nn.Module):
    """One exit's classifier. ``mean`` is the paper's teacher head, ``gru`` its student head."""

    def __init__(self, head_type: str, hidden: int, num_labels: int, dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.head_type = head_type
        self.frames = _frame_encoder(head_type, hidden)
        self.pool = _pooling(head_type, hidden)
        self.proj = nn.Linear(pooled_width(head_type, hidden), dim)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_labels)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None) -> HeadOutput:
        # a frame encoder that normalises across frames (`takes_mask`) must see the mask
        encoded = self.frames(frames, mask) if getattr(self.frames, "takes_mask", False) else self.frames(frames)
        embedding = self.pool(encoded, mask)  # (batch, pooled_width)
        linear = self.proj(self.dropout(embedding))  # (batch, dim)
        logits = self.classifier(self.dropout(self.act(linear)))  # (batch, classes)
        return HeadOutput(logits=logits, embedding=embedding, linear=linear)
