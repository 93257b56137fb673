"""Ingest a labelled corpus into Parquet shards (local or s3://): the entrypoint for `ray job submit`.

    ray job submit --working-dir . -- python jobs/ingest.py SOURCE DEST [--format auto] [--labels iemocap4]

Arguments are those of `emodistill ingest` (see `emodistill ingest --help`).
"""

import sys

from _bootstrap import run_cli

if __name__ == "__main__":
    run_cli("ingest", sys.argv[1:], needs_ray=False)
