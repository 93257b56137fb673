"""Self-distillation fine-tuning on Ray Train: the entrypoint for `ray job submit`.

    ray job submit --working-dir . -- python jobs/train.py --config jobs/configs/demo_cpu.yaml [key=value ...]

Arguments are those of `emodistill train` (see `emodistill train --help`).
"""

import sys

from _bootstrap import run_cli

if __name__ == "__main__":
    run_cli("train", sys.argv[1:], needs_ray=True)
