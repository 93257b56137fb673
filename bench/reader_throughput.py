"""Reader speed: padded batches from Parquet through Ray Data, against the same batches
built from in-memory arrays, same dataset, batch size and crop, same run.

  A. in memory: clips decoded beforehand, then crop + pad + mask per batch (pure torch)
  B. Ray Data: read_dataset (Parquet -> FLAC decode -> crop) + iter_torch_batches(Collate)
Batches per second; ratio B/A. The first Ray Data pass (cluster and pipeline start-up) is
reported separately from the steady-state passes.

    .venv/bin/python bench/reader_throughput.py --dataset runs/demo/data
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from emodistill.data.batching import BatchOptions, pad_batch, prepare
from emodistill.data.rows import load_arrays
from emodistill.evaluate.tables import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="runs/demo/data")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=3.0)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    options = BatchOptions(mode="crop", max_seconds=args.max_seconds)

    waves = list(load_arrays(args.dataset, options=BatchOptions(mode="full"))["waveform"])
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    batches = 0
    for _ in range(args.passes):
        for start in range(0, len(waves), args.batch_size):
            pad_batch([prepare(w, options, rng) for w in waves[start : start + args.batch_size]])
            batches += 1
    memory_rate = batches / (time.perf_counter() - started)

    import ray

    from emodistill.data.reader import Collate, read_dataset

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = read_dataset(args.dataset, options=options)
    rates = []
    for _ in range(args.passes + 1):
        started = time.perf_counter()
        n = sum(1 for _ in ds.iter_torch_batches(batch_size=args.batch_size, collate_fn=Collate()))
        rates.append(n / (time.perf_counter() - started))
    ray.shutdown()
    steady = float(np.mean(rates[1:]))
    print(f"{len(waves)} clips, batch {args.batch_size}, crop {args.max_seconds} s\n")
    print(markdown_table(
        ["path", "batches/s", "relative"],
        [
            ["in memory: crop + pad (decoded beforehand)", memory_rate, "1.00"],
            ["Ray Data from Parquet, steady passes", steady, f"{steady / memory_rate:.3f}"],
            ["Ray Data from Parquet, first pass", rates[0], f"{rates[0] / memory_rate:.3f}"],
        ],
    ))


if __name__ == "__main__":
    main()
