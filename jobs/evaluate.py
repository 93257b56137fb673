"""Per-exit accuracy and latency report of a checkpoint: the entrypoint for `ray job submit`.

    ray job submit --working-dir . -- python jobs/evaluate.py CHECKPOINT DATASET [--out DIR]

Arguments are those of `emodistill evaluate` (see `emodistill evaluate --help`).
"""

import sys

from _bootstrap import run_cli

if __name__ == "__main__":
    run_cli("evaluate", sys.argv[1:], needs_ray=False)
