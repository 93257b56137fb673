"""The early-exit model: a speech encoder with classifiers ("exits") on some of its blocks.

Reading order: the user-facing config, the resolved spec a checkpoint stores, typed
outputs, then the model.

    waveform (batch, samples) + mask
      -> per-utterance normalisation over valid samples
      -> conv feature encoder -> projection      (batch, frames, hidden), frame mask
      -> blocks 1..depth, depth = deepest exit asked for (later blocks never run)
      -> exit_<b> head on the output of block b, for each requested exit
    => {"exit_3": ExitOutput(logits, embedding, linear), ...}

The deepest exit is the teacher. ``cut(b)`` turns the model into a standalone model that
holds only the conv encoder, blocks 1..b and head ``exit_b``. ``resume(hidden, k)``
continues from the output of block k (kept from an earlier, shallower run) through blocks
k+1..depth, so a confidence cascade never recomputes the conv encoder or blocks 1..k.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from pydantic import Field, field_validator
from torch import nn
from transformers import PreTrainedModel

from emodistill.config import Config
from emodistill.exits import exit_block, exit_name
from emodistill.model.backbone import BackboneConfig, load_backbone
from emodistill.model.heads import ExitHead, HeadOutput, HeadType


class ModelConfig(Config):
    """What to build: a backbone plus exits. Blocks are counted from 1."""

    backbone: BackboneConfig = Field(
        default_factory=lambda: BackboneConfig(arch="tiny"), description="The speech encoder."
    )
    exits: list[int] = Field(
        default_factory=list,
        description="Blocks (1..L) that carry a student exit. The last block L is always an exit "
        "and the teacher, whether listed or not; an empty list is plain fine-tuning.",
    )
    student_head: HeadType = Field("gru", description="Head type of student exits (gru, lstm, conv, mean, stats, attentive).")
    teacher_head: HeadType = Field("mean", description="Head type of the deepest exit (the paper: mean).")
    head_dim: int = Field(256, gt=0, description="Width of each head's first linear layer (the paper: 256).")
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout inside the heads.")
    normalize_waveform: bool = Field(
        True, description="Zero-mean unit-variance per utterance over valid samples (as the paper)."
    )

    @field_validator("exits")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(b < 1 for b in value):
            raise ValueError(f"exit blocks are counted from 1, got {value}")
        return sorted(set(value))


class ExitModelSpec(Config):
    """The resolved, self-contained description of a built model (stored in checkpoints)."""

    heads: dict[str, HeadType] = Field(description="Exit name -> head type, shallowest first; the last is the teacher.")
    labels: list[str] = Field(description="Class names in logit order.")
    num_blocks: int = Field(description="Transformer blocks this model holds (L, or b after cut(b)).")
    source_num_blocks: int = Field(description="Blocks of the backbone the exits were trained on.")
    head_dim: int = Field(256, description="Width of each head's first linear layer.")
    head_dropout: float = Field(0.1, description="Dropout inside the heads.")
    normalize_waveform: bool = Field(True, description="Normalise each utterance over its valid samples.")

    @property
    def blocks(self) -> list[int]:
        return [exit_block(n) for n in self.heads]

    @property
    def teacher(self) -> str:
        return next(reversed(self.heads))


@dataclass
class ExitOutput:
    block: int
    logits: torch.Tensor  # (batch, classes)
    embedding: torch.Tensor  # (batch, hidden)
    linear: torch.Tensor  # (batch, head_dim)

    @classmethod
    def of(cls, block: int, head: HeadOutput) -> "ExitOutput":
        return cls(block=block, logits=head.logits, embedding=head.embedding, linear=head.linear)


@dataclass
class EarlyExitOutput:
    exits: dict[str, ExitOutput]  # exit_<b> -> output, shallowest first
    frame_mask: torch.Tensor | None  # (batch, frames) bool, None when nothing is padded
    hidden: dict[str, torch.Tensor] = field(default_factory=dict)  # exit_<b> -> output of block b

    @property
    def frame_lengths(self) -> list[int] | None:
        return None if self.frame_mask is None else self.frame_mask.sum(dim=1).tolist()

    @property
    def teacher(self) -> ExitOutput:
        return self.exits[next(reversed(self.exits))]


def resolve_spec(cfg: ModelConfig, labels: Sequence[str], num_blocks: int) -> ExitModelSpec:
    """Check the exits against the backbone depth and fix the head of every exit."""
    if len(labels) < 2:
        raise ValueError(f"need at least 2 labels, got {list(labels)}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {list(labels)}")
    bad = [b for b in cfg.exits if b > num_blocks]
    if bad:
        raise ValueError(f"exits {bad} are deeper than the backbone's {num_blocks} blocks")
    blocks = sorted(set(cfg.exits) | {num_blocks})
    heads = {exit_name(b): (cfg.teacher_head if b == num_blocks else cfg.student_head) for b in blocks}
    return ExitModelSpec(
        heads=heads,
        labels=list(labels),
        num_blocks=num_blocks,
        source_num_blocks=num_blocks,
        head_dim=cfg.head_dim,
        head_dropout=cfg.head_dropout,
        normalize_waveform=cfg.normalize_waveform,
    )


def normalize(waveform: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-7) -> torch.Tensor:
    """Zero mean, unit variance per row over valid samples; padding stays 0. (batch, samples)."""
    if mask is None:
        mean = waveform.mean(dim=1, keepdim=True)
        var = waveform.var(dim=1, keepdim=True, unbiased=False)
        return (waveform - mean) / torch.sqrt(var + eps)
    m = mask.to(waveform.dtype)
    count = m.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (waveform * m).sum(dim=1, keepdim=True) / count
    var = (((waveform - mean) * m) ** 2).sum(dim=1, keepdim=True) / count
    return (waveform - mean) / torch.sqrt(var + eps) * m


class EarlyExitModel(nn.Module):
    """Backbone + one head per exit; runs only as deep as the deepest exit it is asked for."""

    def __init__(self, backbone: PreTrainedModel, spec: ExitModelSpec):
        super().__init__()
        if len(backbone.encoder.layers) != spec.num_blocks:
            raise ValueError(f"backbone has {len(backbone.encoder.layers)} blocks, spec says {spec.num_blocks}")
        self.backbone = backbone
        self.spec = spec
        hidden = backbone.config.hidden_size
        self.heads = nn.ModuleDict(
            {
                name: ExitHead(kind, hidden, len(spec.labels), spec.head_dim, spec.head_dropout)
                for name, kind in spec.heads.items()
            }
        )

    # ---- properties -------------------------------------------------------------------
    @property
    def exit_names(self) -> list[str]:
        return list(self.spec.heads)

    @property
    def labels(self) -> list[str]:
        return list(self.spec.labels)

    @property
    def num_frames_per_second(self) -> float:
        stride = 1
        for s in self.backbone.config.conv_stride:
            stride *= s
        return 16000 / stride

    # ---- forward ----------------------------------------------------------------------
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        exits: Sequence[str] | None = None,
    ) -> EarlyExitOutput:
        """input_values: (batch, samples) float; attention_mask: (batch, samples), 1 = valid.

        ``exits`` limits the run to those exits (default: all); only blocks up to the
        deepest of them are computed.
        """
        names = self.exit_names if exits is None else [n for n in self.exit_names if n in set(exits)]
        unknown = set(exits or ()) - set(self.exit_names)
        if unknown or not names:
            raise ValueError(f"unknown exits {sorted(unknown) or list(exits or [])}; this model has {self.exit_names}")
        hidden, frame_mask = self.embed(input_values, attention_mask)
        return self._heads(names, self.run_blocks(hidden, frame_mask, [exit_block(n) for n in names]), frame_mask)

    def resume(
        self,
        hidden: torch.Tensor,
        from_block: int,
        frame_mask: torch.Tensor | None = None,
        exits: Sequence[str] | None = None,
    ) -> EarlyExitOutput:
        """Continue a run from ``hidden``, the output of block ``from_block`` (as
        ``EarlyExitOutput.hidden`` gave it): only blocks from_block+1.. run. Returns the
        exits deeper than ``from_block`` (or ``exits``), equal to a run from the waveform."""
        deeper = [n for n in self.exit_names if exit_block(n) > from_block]
        names = deeper if exits is None else [n for n in deeper if n in set(exits)]
        if not 0 < from_block < self.spec.num_blocks or not names:
            raise ValueError(
                f"cannot resume from block {from_block} to {list(exits or deeper)}: this model has "
                f"{self.spec.num_blocks} blocks and exits {self.exit_names}"
            )
        blocks = [exit_block(n) for n in names]
        return self._heads(names, self.run_blocks(hidden, frame_mask, blocks, start=from_block), frame_mask)

    def _heads(
        self, names: Sequence[str], states: dict[int, torch.Tensor], frame_mask: torch.Tensor | None
    ) -> EarlyExitOutput:
        outputs = {n: ExitOutput.of(exit_block(n), self.heads[n](states[exit_block(n)], frame_mask)) for n in names}
        return EarlyExitOutput(exits=outputs, frame_mask=frame_mask, hidden={n: states[exit_block(n)] for n in names})

    def embed(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Conv feature encoder + projection: (batch, samples) -> (batch, frames, hidden), frame mask."""
        if attention_mask is not None:
            attention_mask = attention_mask.long()
            if bool(attention_mask.all()):
                attention_mask = None  # nothing padded: the plain batched path is exact
        if self.spec.normalize_waveform:
            input_values = normalize(input_values, attention_mask)
        features = self._conv_features(input_values, attention_mask)  # (batch, channels, frames)
        features = features.transpose(1, 2)
        frame_mask = None
        if attention_mask is not None:
            frame_mask = self.backbone._get_feature_vector_attention_mask(features.shape[1], attention_mask).bool()
        projected = self.backbone.feature_projection(features)
        hidden = projected[0] if isinstance(projected, tuple) else projected
        hidden = self.backbone._mask_hidden_states(hidden, attention_mask=frame_mask)  # SpecAugment, training only
        return hidden, frame_mask

    def _conv_features(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        conv = self.backbone.feature_extractor
        if attention_mask is None or getattr(self.backbone.config, "feat_extract_norm", "layer") != "group":
            return conv(input_values)
        # GroupNorm in the first conv layer normalises over all time steps, padding
        # included, so a padded clip would not match the clip alone. Run each clip on its
        # own samples and pad the frames instead (an equal-length batch never gets here).
        full = conv(input_values[:1])  # shape reference: (1, channels, frames)
        out = full.new_zeros(input_values.shape[0], full.shape[1], full.shape[2])
        lengths = attention_mask.sum(dim=1).tolist()
        for i, n in enumerate(lengths):
            clip = conv(input_values[i : i + 1, : int(n)])
            out[i, :, : clip.shape[2]] = clip[0]
        return out

    def run_blocks(
        self, hidden: torch.Tensor, frame_mask: torch.Tensor | None, blocks: Sequence[int], start: int = 0
    ) -> dict[int, torch.Tensor]:
        """Run blocks start+1..max(blocks) and return {block: (batch, frames, hidden)} for
        ``blocks``. ``hidden`` is the embedding (start=0) or the output of block ``start``."""
        depth = max(blocks)
        encoder = self.backbone.encoder
        captured: dict[int, torch.Tensor] = {}

        def capture(block: int):
            def hook(_module, _inputs, output):
                captured[block] = output[0] if isinstance(output, tuple) else output

            return hook

        handles = [encoder.layers[b - 1].register_forward_hook(capture(b)) for b in set(blocks)]
        try:
            with self._span(start, depth), self._masked_positions(frame_mask, start):
                last = encoder(hidden, attention_mask=frame_mask).last_hidden_state
        finally:
            for handle in handles:
                handle.remove()
        if depth == self.spec.source_num_blocks:
            # The backbone's own final output (stable-layer-norm models apply their last
            # LayerNorm here); identical to the block output for post-norm models.
            captured[depth] = last
        return {b: captured[b] for b in blocks}

    @contextmanager
    def _masked_positions(self, frame_mask: torch.Tensor | None, start: int) -> Iterator[None]:
        """data2vec-audio's positional embedding is a stack of convs, each followed by a
        LayerNorm and GELU: after the first, padded frames are no longer zero and leak
        into the last real frames through the next conv, so a padded clip would differ
        from the clip alone. While a padded batch runs, zero the padded frames after each
        conv layer (what the clip alone sees: the conv's own zero padding)."""
        encoder = self.backbone.encoder
        pos = encoder.pos_conv_embed
        if frame_mask is None or start > 0 or not isinstance(getattr(pos, "layers", None), nn.ModuleList):
            yield
            return
        encoder.pos_conv_embed = _MaskedConvStack(pos, frame_mask)
        try:
            yield
        finally:
            encoder.pos_conv_embed = pos

    @contextmanager
    def _span(self, start: int, depth: int) -> Iterator[None]:
        """Temporarily keep only blocks start+1..depth in the encoder, so no other block runs.

        Resuming (start > 0) also skips what the encoder does before its first block: the
        positional convolution and, in post-norm encoders, the LayerNorm (both were applied
        before block 1 of the earlier run). WavLM's first block computes a relative position
        bias that later blocks reuse; a resumed run gets it from block 1's table.
        """
        encoder = self.backbone.encoder
        saved = {"layers": encoder.layers, "pos_conv_embed": encoder.pos_conv_embed, "layer_norm": encoder.layer_norm}
        if start == 0 and depth == len(encoder.layers):
            yield
            return
        layers = list(encoder.layers)[start:depth]
        if start > 0:
            encoder.pos_conv_embed = _NoPosition()
            if not getattr(self.backbone.config, "do_stable_layer_norm", False):
                encoder.layer_norm = nn.Identity()
            first_attention = saved["layers"][0].attention
            if hasattr(first_attention, "rel_attn_embed"):
                layers[0] = _WithPositionBias(layers[0], first_attention)
        encoder.layers = nn.ModuleList(layers)
        try:
            yield
        finally:
            for name, module in saved.items():
                setattr(encoder, name, module)

    # ---- cutting ----------------------------------------------------------------------
    def cut(self, exit: str | int) -> "EarlyExitModel":
        """A standalone model for one exit: conv encoder, blocks 1..b and head exit_b only."""
        name = exit if isinstance(exit, str) else exit_name(exit)
        if name not in self.spec.heads:
            raise ValueError(f"no exit {name!r} in this model; it has {self.exit_names}")
        block = exit_block(name)
        backbone = copy.deepcopy(self.backbone)
        backbone.encoder.layers = nn.ModuleList(list(backbone.encoder.layers)[:block])
        backbone.config.num_hidden_layers = block
        spec = self.spec.model_copy(update={"heads": {name: self.spec.heads[name]}, "num_blocks": block})
        model = EarlyExitModel(backbone, spec)
        model.heads[name].load_state_dict(self.heads[name].state_dict())
        return model.train(self.training)


class _MaskedConvStack(nn.Module):
    """A stacked positional conv (data2vec-audio) run with padded frames zeroed between layers."""

    def __init__(self, stack: nn.Module, frame_mask: torch.Tensor):
        super().__init__()
        self.stack = stack
        self.keep = frame_mask.unsqueeze(1)  # (batch, 1, frames)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = hidden.transpose(1, 2)  # (batch, hidden, frames)
        for layer in self.stack.layers:
            x = layer(x) * self.keep.to(x.dtype)
        return x.transpose(1, 2)


class _NoPosition(nn.Module):
    """Stands in for the positional convolution when resuming: adds nothing."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden.new_zeros(())


class _WithPositionBias(nn.Module):
    """A WavLM block that receives the relative position bias block 1 would have passed on."""

    def __init__(self, layer: nn.Module, first_attention: nn.Module):
        super().__init__()
        self.layer = layer
        self.first_attention = first_attention

    def forward(self, hidden_states: torch.Tensor, position_bias: torch.Tensor | None = None, **kwargs):
        if position_bias is None:
            batch, frames, _ = hidden_states.shape
            heads = self.first_attention.num_heads
            bias = self.first_attention.compute_bias(frames, frames)  # (heads, frames, frames)
            position_bias = bias.unsqueeze(0).expand(batch, -1, -1, -1).reshape(batch * heads, frames, frames)
        return self.layer(hidden_states, position_bias=position_bias, **kwargs)


def build_model(cfg: ModelConfig, labels: Sequence[str], s3=None) -> EarlyExitModel:
    """Load or initialise the backbone of ``cfg`` and attach fresh heads for ``labels``
    (``s3``: S3Options for an ``s3://`` backbone)."""
    backbone = load_backbone(cfg.backbone, s3)
    spec = resolve_spec(cfg, labels, backbone.config.num_hidden_layers)
    return EarlyExitModel(backbone, spec)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
