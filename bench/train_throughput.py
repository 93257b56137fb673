"""Training throughput: Ray Train + Ray Data streaming against the bare training step.

Same model, batch size, crop length and torch threads, one run:
  A. in-process: the training step (emodistill.train.step.TrainStep) over batches built
     beforehand from in-memory arrays (no Ray, no decoding in the loop);
  B. Ray Train: `fit` with one worker streaming the Parquet dataset through Ray Data
     (decode, crop, pad, collate) -- clips/s measured inside the worker's epoch loop,
     plus the wall time of the whole job (cluster start, workers, checkpoints).
Prints a Markdown table and the ratio B/A (what the platform costs per clip).

    .venv/bin/python bench/train_throughput.py --dataset runs/demo/data --epochs 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emodistill.data.batching import BatchOptions, pad_batch, prepare
from emodistill.data.rows import load_arrays
from emodistill.evaluate.tables import markdown_table
from emodistill.losses import SelfDistillationLoss
from emodistill.model import build_model
from emodistill.train.config import TrainConfig
from emodistill.train.preflight import preflight
from emodistill.train.step import TrainStep

ROOT = Path(__file__).resolve().parents[1]


def in_process(cfg: TrainConfig, labels, train_part, epochs: int) -> float:
    torch.set_num_threads(cfg.scaling.torch_threads or 1)
    torch.manual_seed(cfg.seed)
    arrays = load_arrays(cfg.data.dataset, part=train_part, options=BatchOptions(mode="full"))
    rng = np.random.default_rng(cfg.seed)
    waves = [prepare(w, cfg.data.train_batch, rng) for w in arrays["waveform"]]
    ys = torch.as_tensor(np.asarray(arrays["label_id"], dtype=np.int64))
    b = cfg.optim.batch_size
    batches = []
    for start in range(0, len(waves), b):
        x, mask = pad_batch(waves[start : start + b])
        batches.append({"input_values": x, "attention_mask": mask, "labels": ys[start : start + b]})
    model = build_model(cfg.model, labels).train()
    step = TrainStep(model, SelfDistillationLoss(cfg.loss), cfg.optim, len(batches) * epochs)
    step(batches[0])  # warm-up
    clips, started = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in batches:
            step(batch)
            clips += len(batch["labels"])
    return clips / (time.perf_counter() - started)


def ray_train(cfg: TrainConfig) -> tuple[float, float, int]:
    import ray

    from emodistill.train.driver import fit

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    started = time.perf_counter()
    result = fit(cfg, progress=False)
    wall = time.perf_counter() - started
    ray.shutdown()
    # skip the first epoch (worker start-up, first Ray Data pipeline); mean of the rest
    rates = [h["train/clips_per_second"] for h in result.history[1:]] or [result.history[0]["train/clips_per_second"]]
    clips = int(sum(h["train/clips"] for h in result.history))
    return float(np.mean(rates)), wall, clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="runs/demo/data")
    parser.add_argument("--config", default=str(ROOT / "jobs/configs/demo_cpu.yaml"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-train-")
    cfg = TrainConfig.from_yaml(
        args.config,
        [
            f"data.dataset={args.dataset}",
            f"optim.epochs={args.epochs}",
            "scaling.num_workers=1",
            "scaling.cpus_per_worker=1",
            f"scaling.torch_threads={args.threads}",
            f"run.storage_path={tmp}",
            "run.export_dir=null",
            "run.name=bench",
        ],
    )
    plan = preflight(cfg)
    a = in_process(cfg, plan.info.labels, plan.selection.train, args.epochs)
    b, wall, clips = ray_train(cfg)
    result = {
        "in_process_clips_per_s": a,
        "ray_train_clips_per_s": b,
        "ratio_ray_over_in_process": b / a,
        "ray_train_job_wall_s": wall,
        "clips_trained": clips,
        "batch_size": cfg.optim.batch_size,
        "threads": args.threads,
        "epochs": args.epochs,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(markdown_table(
        ["path", "clips/s", "relative"],
        [["in-process TrainStep, in-memory batches", a, "1.00"],
         ["Ray Train (1 worker) + Ray Data streaming", b, f"{b / a:.2f}"]],
    ))
    print(f"\nRay Train job wall time {wall:.1f} s for {clips} clips (start-up, checkpoints and validation included)")


if __name__ == "__main__":
    main()
