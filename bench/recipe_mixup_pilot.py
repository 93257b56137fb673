"""A pilot, not a feature: bench/recipe_vs_baseline.py with mixup (Zhang et al. 2018) in
training: each batch is mixed with a shuffled copy of itself, x = lam x_a + (1 - lam) x_b on
the waveform (lam ~ Beta(--alpha, --alpha), one per batch, the longer clip's length kept),
and the loss is lam L(y_a) + (1 - lam) L(y_b) (the distillation terms are the same in
both). Patched into ``TrainStep`` for this process only. It asks whether mixing clips of
different speakers keeps the network from learning the training voices.

    .venv/bin/python bench/recipe_mixup_pilot.py --corpora alt --test-folds 0 --trace 5 --jobs 1

Every other argument is recipe_vs_baseline.py's; use --jobs 1 (the patch lives in this process).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import torch

from emodistill.train import step as step_module

BENCH = Path(__file__).resolve().parent / "recipe_vs_baseline.py"


def patch(alpha: float) -> None:
    original = step_module.TrainStep.__call__

    def mixed(self, batch):
        x, mask, labels = batch["input_values"], batch["attention_mask"], batch["labels"]
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(x.shape[0])
        mixed_x = lam * x + (1 - lam) * x[perm]
        mixed_mask = torch.maximum(mask, mask[perm])
        fn = self.loss_fn

        def loss_fn(outputs, y):
            a, b = fn(outputs, y), fn(outputs, y[perm])
            a.total = lam * a.total + (1 - lam) * b.total
            return a

        self.loss_fn = loss_fn
        try:
            return original(self, {"input_values": mixed_x, "attention_mask": mixed_mask, "labels": labels})
        finally:
            self.loss_fn = fn

    step_module.TrainStep.__call__ = mixed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--alpha", type=float, default=0.4, help="Beta(alpha, alpha) of the mixing weight.")
    own, rest = parser.parse_known_args()
    patch(own.alpha)
    sys.argv = [str(BENCH), *rest]
    runpy.run_path(str(BENCH), run_name="__main__")
