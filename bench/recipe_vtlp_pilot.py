"""A pilot, not a feature: bench/recipe_vs_baseline.py with vocal-tract-length perturbation
(Jaitly & Hinton 2013) in training: each clip's mel filterbank is read on a frequency axis
stretched by a factor drawn from --alpha (default 0.85..1.15), as if another voice had
spoken it; evaluation uses the plain filterbank. Patched into ``LogMelFrontEnd`` for this
process only. It asks whether new "voices" in training let the CPU recipe carry what it
learns to new speakers (docs/benchmarks.md has the answer).

    .venv/bin/python bench/recipe_vtlp_pilot.py --corpora alt --test-folds 0 --trace 5 --jobs 1

Every other argument is recipe_vs_baseline.py's; use --jobs 1 (the patch lives in this process).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import numpy as np
import torch

from emodistill.model.frontend import LogMelFrontEnd, mel_filterbank

BENCH = Path(__file__).resolve().parent / "recipe_vs_baseline.py"
STEPS = 13  # warp factors precomputed between the two ends of --alpha
_log_mel = LogMelFrontEnd.log_mel


def patch(low: float, high: float) -> None:
    def warped_log_mel(self, x):
        if not self.training or self.pitch:
            return _log_mel(self, x)
        if not hasattr(self, "_vtlp_banks"):
            n_mels = self.mel.shape[0]
            # the bins' frequencies scaled by alpha: energy at f is read as if it were at alpha x f
            banks = [mel_filterbank(self.n_fft, n_mels, int(16000 * a)) for a in np.linspace(low, high, STEPS)]
            self._vtlp_banks = torch.tensor(np.stack(banks), dtype=torch.float32, device=x.device)
        power = self.power(x.float())  # (batch, freq, frames)
        pick = torch.randint(0, STEPS, (x.shape[0],), device=x.device)
        return torch.log(torch.matmul(self._vtlp_banks[pick], power) + 1e-6)

    LogMelFrontEnd.log_mel = warped_log_mel


if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--alpha", default="0.85,1.15", help="Warp factor range, low,high.")
    own, rest = parser.parse_known_args()
    low, high = (float(v) for v in own.alpha.split(","))
    patch(low, high)
    sys.argv = [str(BENCH), *rest]
    runpy.run_path(str(BENCH), run_name="__main__")
