"""A pilot, not a feature: bench/recipe_vs_baseline.py with a speaker-adversarial loss
(Ganin & Lempitsky 2015): on every exit, a linear speaker classifier reads the pooled
embedding through a gradient-reversal layer, so the backbone and heads are pushed to
forget which training speaker spoke while they learn the emotion. The reversal's scale
ramps 0 -> 1 over training (2 / (1 + exp(-10 p)) - 1); the adversarial loss is weighted by
--weight. Patched into this process only; it asks whether the network's trouble with new
voices is that it learns the training voices.

    .venv/bin/python bench/recipe_grl_pilot.py --corpora alt --test-folds 0 --trace 5 --jobs 1

Every other argument is recipe_vs_baseline.py's; use --jobs 1 (the patch lives in this process).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_vs_baseline as recipe  # noqa: E402

SPEAKER_OF: dict[int, str] = {}  # id(clip array) -> speaker, filled as folds are loaded


class Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def load_folds(uri: str):
    from emodistill.data.rows import load_arrays

    labels, by_fold = _load_folds(uri)
    for fold, data in by_fold.items():
        speakers = load_arrays(uri, folds=[fold])["speaker"]
        for wave, speaker in zip(data["waves"], speakers):
            SPEAKER_OF[id(wave)] = str(speaker)
    return labels, by_fold


class Adversary:
    """recipe_vs_baseline's training hooks: the speaker classifiers, their optimiser, and the
    adversarial term added to the recipe's loss."""

    def __init__(self, waves, weight: float):
        names = sorted({SPEAKER_OF[id(w)] for w in waves})
        self.spk = np.array([names.index(SPEAKER_OF[id(w)]) for w in waves])
        self.num_speakers, self.weight = len(names), weight
        self.speakers, self.done = None, 0

    def setup(self, model, step, total: int) -> None:
        with torch.no_grad():
            probe = model(torch.zeros(1, 16000))
        self.heads = nn.ModuleDict({n: nn.Linear(o.embedding.shape[-1], self.num_speakers) for n, o in probe.exits.items()})
        self.optimizer = torch.optim.AdamW(self.heads.parameters(), lr=step.cfg.lr_heads)
        self.total, emotion_loss = total, step.loss_fn

        def loss_with_adversary(outputs, y):
            out = emotion_loss(outputs, y)
            scale = 2.0 / (1.0 + math.exp(-10.0 * self.done / self.total)) - 1.0
            adv = sum(
                nn.functional.cross_entropy(self.heads[n](Reverse.apply(o.embedding, scale)), self.speakers)
                for n, o in outputs.exits.items()
            ) / len(outputs.exits)
            out.total = out.total + self.weight * adv
            return out

        step.loss_fn = loss_with_adversary

    def before(self, idx) -> None:
        self.speakers = torch.as_tensor(self.spk[idx])

    def after(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.done += 1


def train_in_process(cfg, labels, waves, ys, seed: int, trace=None, weight: float = 0.3):
    return _train_in_process(cfg, labels, waves, ys, seed, trace, hooks=Adversary(waves, weight))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--weight", type=float, default=0.3, help="Weight of the speaker-adversarial loss.")
    own, rest = parser.parse_known_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _load_folds, _train_in_process = recipe.load_folds, recipe.train_in_process
    recipe.load_folds = load_folds
    recipe.train_in_process = lambda *a, **k: train_in_process(*a, **k, weight=own.weight)
    sys.argv = [str(recipe.__file__), *rest]
    recipe.main()
