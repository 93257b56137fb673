"""From clips to model batches (pure numpy/torch, no Ray): the same code feeds training,
evaluation and serving, so they cannot drift apart.

Modes of preparing one clip (mono float32, 16 kHz):
- ``crop``  (training): a random window of at most ``max_seconds``; shorter clips whole.
- ``full``  (evaluation): the whole clip.
- ``fixed`` (the paper): exactly ``fixed_samples`` (95,744 = 5.984 s); longer clips keep
  their start, shorter ones are tiled.
A batch is zero-padded to its longest clip, with an attention mask (1 = real sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from emodistill.config import Config

PAPER_FIXED_SAMPLES = 95_744


class BatchOptions(Config):
    """How clips become batches."""

    mode: Literal["crop", "full", "fixed"] = Field(
        "crop", description="crop: random window (training); full: whole clips (evaluation); fixed: tile/crop (paper)."
    )
    max_seconds: float = Field(6.0, gt=0, description="Longest window in crop mode, seconds.")
    fixed_samples: int = Field(PAPER_FIXED_SAMPLES, gt=0, description="Length in fixed mode (paper: 95,744).")
    bucket: bool = Field(False, description="Sort clips by length inside each read block to reduce padding.")
    sample_rate: int = Field(16000, description="Sample rate of the clips, Hz.")


def prepare(wave: np.ndarray, options: BatchOptions, rng: np.random.Generator | None = None) -> np.ndarray:
    """One clip -> what goes into the batch, per ``options.mode``."""
    if options.mode == "full":
        return wave
    if options.mode == "fixed":
        n = options.fixed_samples
        if wave.size >= n:
            return wave[:n]
        reps = -(-n // max(1, wave.size))
        return np.tile(wave, reps)[:n]
    limit = int(options.max_seconds * options.sample_rate)
    if wave.size <= limit:
        return wave
    rng = rng or np.random.default_rng()
    start = int(rng.integers(0, wave.size - limit + 1))
    return wave[start : start + limit]


def pad_batch(waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad clips to the longest: (input_values (batch, samples) float32, attention_mask (batch, samples) long)."""
    if len(waves) == 0:
        raise ValueError("cannot batch zero clips")
    width = max(int(w.shape[0]) for w in waves)
    values = torch.zeros(len(waves), width, dtype=torch.float32)
    mask = torch.zeros(len(waves), width, dtype=torch.long)
    for i, w in enumerate(waves):
        n = int(w.shape[0])
        values[i, :n] = torch.tensor(w, dtype=torch.float32)  # a copy: Ray hands read-only arrays
        mask[i, :n] = 1
    return values, mask


def collate(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Ray Data numpy batch {"waveform", "label_id", ...} -> model inputs and labels."""
    waves = list(batch["waveform"])
    values, mask = pad_batch(waves)
    return {
        "input_values": values,
        "attention_mask": mask,
        "labels": torch.tensor(np.asarray(batch["label_id"], dtype=np.int64)),
    }


def ragged(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """A 1-D object array holding ``arrays`` (numpy would stack equal-length ones into 2-D)."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out
