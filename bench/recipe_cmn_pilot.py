"""A pilot, not a feature: bench/recipe_vs_baseline.py with the log-mel bands of every clip
mean-normalised over its frames with signal (cepstral mean normalisation), patched into
``LogMelFrontEnd`` for this process only. It asks whether removing each voice's average
spectrum lets the CPU recipe carry what it learns to new voices (docs/benchmarks.md: it
does not; the training voices are fitted faster and the test UAR drops).

    .venv/bin/python bench/recipe_cmn_pilot.py --corpora alt --test-folds 0 --trace 5 --jobs 1

Every argument is recipe_vs_baseline.py's; use --jobs 1 (the patch lives in this process).
"""

from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path

from emodistill.model.frontend import LogMelFrontEnd

BENCH = Path(__file__).resolve().parent / "recipe_vs_baseline.py"
FLOOR = math.log(1e-6) + 1e-3  # a frame of zeros (padding) sits at the log floor in every band
_log_mel = LogMelFrontEnd.log_mel


def normalised_log_mel(self, x):
    bands = _log_mel(self, x)  # (batch, n_mels, frames)
    valid = (bands.amax(dim=1, keepdim=True) > FLOOR).to(bands.dtype)
    mean = (bands * valid).sum(-1, keepdim=True) / valid.sum(-1, keepdim=True).clamp_min(1.0)
    return (bands - mean) * valid


if __name__ == "__main__":
    LogMelFrontEnd.log_mel = normalised_log_mel
    sys.argv = [str(BENCH), *sys.argv[1:]]
    runpy.run_path(str(BENCH), run_name="__main__")
