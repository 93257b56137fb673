"""The cut model as a plain function of tensors, for exporters (ONNX, TorchScript).

    input_values   (batch, samples) float32, raw audio at 16 kHz (the graph normalises it)
    attention_mask (batch, samples) int64, 1 = real sample     [only when `with_mask`]
      -> conv encoder -> blocks 1..b -> head exit_b
    logits         (batch, classes) float32

The mask is an input only where it changes answers, as in Hugging Face's wav2vec2
feature extractors (``return_attention_mask``): backbones whose conv encoder ends each
layer with a LayerNorm (``feat_extract_norm == "layer"``). With the GroupNorm conv
encoder of wav2vec2-base, padding would change the normalisation of the first conv
layer, so those graphs take equal-length batches only (runtimes batch clips of one
length together, or one clip at a time).
"""

from __future__ import annotations

import torch
from torch import nn

from emodistill.exits import exit_block
from emodistill.model.early_exit import EarlyExitModel, normalize


def needs_mask(model: EarlyExitModel) -> bool:
    """True when padded batches need an attention mask to give each clip's own answer."""
    return getattr(model.backbone.config, "feat_extract_norm", "group") == "layer"


class LogitsGraph(nn.Module):
    """``forward(input_values[, attention_mask]) -> logits`` of one exit of a cut model."""

    def __init__(self, model: EarlyExitModel, exit: str, with_mask: bool | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if exit not in model.exit_names:
            raise ValueError(f"no exit {exit!r} in this model; it has {model.exit_names}")
        self.model = model.eval()
        self.exit = exit
        self.block = exit_block(exit)
        self.with_mask = needs_mask(model) if with_mask is None else with_mask
        self.dtype = dtype  # None: run in the model's dtype; else cast the input to it and logits back to float32
        self.eval()

    @property
    def input_names(self) -> list[str]:
        return ["input_values", "attention_mask"] if self.with_mask else ["input_values"]

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.dtype is not None:
            input_values = input_values.to(self.dtype)
        if not self.with_mask:
            logits = self.model(input_values, None, exits=[self.exit]).exits[self.exit].logits
            return logits.float()
        # The masked path of EarlyExitModel.embed without its data-dependent shortcut
        # ("nothing padded -> no mask"), so the exported graph always takes it.
        m = self.model
        mask = attention_mask.long()
        values = normalize(input_values, mask) if m.spec.normalize_waveform else input_values
        features = m.backbone.feature_extractor(values).transpose(1, 2)  # (batch, frames, channels)
        frame_mask = m.backbone._get_feature_vector_attention_mask(features.shape[1], mask).bool()
        projected = m.backbone.feature_projection(features)
        hidden = projected[0] if isinstance(projected, tuple) else projected
        states = m.run_blocks(hidden, frame_mask, [self.block])
        return m.heads[self.exit](states[self.block], frame_mask).logits.float()


__all__ = ["LogitsGraph", "needs_mask"]
