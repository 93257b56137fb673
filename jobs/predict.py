"""Classify an archive of recordings on Ray Data: the entrypoint for `ray job submit`.

    ray job submit --working-dir . -- python jobs/predict.py CKPT s3://bucket/calls/ --out s3://bucket/emotions/ \
        [--exit exit_6] [--timeline] [--actors 4]

Arguments are those of `emodistill predict` with --out (see `emodistill predict --help`):
Parquet results (one row per clip, or per segment with --timeline), rejects (file,
reason, message) and files (what is done: a re-run skips it) under --out.
"""

import sys

from _bootstrap import run_cli

if __name__ == "__main__":
    run_cli("predict", sys.argv[1:], needs_ray="--out" in sys.argv[1:])
