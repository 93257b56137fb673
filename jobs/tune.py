"""Ray Tune sweep of the self-distillation loss weights: the entrypoint for `ray job submit`.

    ray job submit --working-dir . -- python jobs/tune.py --config jobs/configs/tune_demo_cpu.yaml [key=value ...]

Arguments are those of `emodistill tune` (see `emodistill tune --help`).
"""

import sys

from _bootstrap import run_cli

if __name__ == "__main__":
    run_cli("tune", sys.argv[1:], needs_ray=True)
