"""An archive classified on Ray Data against the same files in one process, and 1 vs 2 actors.

    .venv/bin/python bench/archive_bench.py [--files 100] [--json runs/bench/archive.json]

The archive: ``--files`` generated speech clips (1-3 s, 16 kHz WAV) in a local directory.
Models: the demo model (tiny random-init wav2vec2 shape, exit_4) and a wav2vec2-base shape
(random init, exit_4). Paths, all over the same files and in the same run:

    one process, N threads   predict_files (decode thread + model) in this process, N torch threads
    Ray Data, A actors       run_archive: a local Ray cluster (started beforehand, not timed),
                             A actors of 1 CPU and 1 torch thread each, Parquet parts written;
                             actor start-up and model loading are inside the wall time
Throughput = files per wall second. Prints a markdown table, writes JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from emodistill.evaluate.tables import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timeline_bench import make_checkpoint  # noqa: E402


def write_clips(root: Path, count: int) -> None:
    from emodistill.data.synth import SynthConfig, synthesize_clip

    cfg = SynthConfig(seed=7, min_seconds=1.0, max_seconds=3.0)
    for i in range(count):
        speaker, emotion = i % cfg.speakers, cfg.emotions[i % len(cfg.emotions)]
        path = root / f"s{speaker:02d}" / f"{emotion}_{i:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synthesize_clip(cfg, speaker, emotion, i), cfg.sample_rate, subtype="PCM_16")


def one_process(ckpt: str, root: Path, threads: int) -> float:
    from emodistill import EmotionRecognizer
    from emodistill.inference.files import expand_inputs, predict_files

    torch.set_num_threads(threads)
    t = time.perf_counter()
    rec = EmotionRecognizer.from_pretrained(ckpt, exit="exit_4", threads=threads)
    files = expand_inputs([str(root)]).files
    n = sum(1 for r in predict_files(rec, files) if r.ok)
    wall = time.perf_counter() - t
    torch.set_num_threads(2)
    return n / wall


def ray_data(ckpt: str, root: Path, out: Path, actors: int) -> float:
    from emodistill.inference.archive import ArchiveConfig, run_archive

    shutil.rmtree(out, ignore_errors=True)
    cfg = ArchiveConfig(model=ckpt, source=str(root), out=str(out), exit="exit_4", actors=actors, num_cpus=1, threads=1,
                        files_per_batch=8)
    report = run_archive(cfg, progress=False)
    assert report.rejected == 0
    return report.done / report.wall_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--json", default="runs/bench/archive.json")
    args = ap.parse_args()
    import ray

    with tempfile.TemporaryDirectory(prefix="archive-bench-") as tmp:
        root = Path(tmp)
        write_clips(root / "clips", args.files)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 logging_config=ray.LoggingConfig(log_level="WARNING"))
        rows, out = [], []
        for name, arch, exits in (("demo (tiny)", "tiny", [1, 2, 3]), ("wav2vec2-base shape", "base", [1, 4])):
            ckpt = make_checkpoint(root, arch, exits)
            results = {
                "one process, 1 thread": one_process(ckpt, root / "clips", 1),
                "one process, 2 threads": one_process(ckpt, root / "clips", 2),
                "Ray Data, 1 actor": ray_data(ckpt, root / "clips", root / "out", 1),
                "Ray Data, 2 actors": ray_data(ckpt, root / "clips", root / "out", 2),
            }
            floor = results["one process, 2 threads"]
            for path, fps in results.items():
                rows.append([name, path, f"{fps:.1f}", f"{fps / floor:.2f}x"])
                out.append({"model": name, "path": path, "files_per_s": fps})
                print(f"  {name} / {path}: {fps:.1f} files/s", file=sys.stderr, flush=True)
        ray.shutdown()
    print(f"\n### Archive throughput ({args.files} clips of 1-3 s, exit_4, 2-core CPU)\n")
    print(markdown_table(["model", "path", "files per s", "vs one process, 2 threads"], rows))
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"files": args.files, "results": out}, fh, indent=1)


if __name__ == "__main__":
    main()
