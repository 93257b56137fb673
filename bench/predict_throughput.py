"""`emodistill predict` over a directory of short clips against the in-process predictor
alone: what the command costs on top of the model (decoding, checks, output, start-up).

    .venv/bin/python bench/predict_throughput.py [--checkpoint runs/demo/checkpoint] [--clips 1000]

Paths, each over the same N clips (generated speech, 0.5-1.5 s, 16 kHz WAV files):
    predictor alone      EmotionRecognizer.predict_waves on clips decoded beforehand, two passes:
                         the first meets every clip length for the first time (oneDNN/onnxruntime
                         set up kernels per input shape), as a fresh CLI process does: the floor;
                         the second shows what warm shapes would give
    predict_files        the library loop `emodistill predict` runs: decode thread + checks + model
    emodistill predict   the console script, --json lines read as they come: start-up (to the
                         first answer) and the steady rate after it, from one run
Twice: the checkpoint's deepest exit in torch fp32, and the same exit exported to ONNX int8.
Prints a markdown table, writes JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from emodistill.data.synth import SynthConfig, synthesize_clip
from emodistill.evaluate.tables import markdown_table
from emodistill.inference.files import expand_inputs, predict_files
from emodistill.inference.recognizer import EmotionRecognizer

BIN = Path(sys.executable).with_name("emodistill")


def write_clips(root: Path, count: int) -> list[Path]:
    cfg = SynthConfig(seed=99, min_seconds=0.5, max_seconds=1.5)
    paths = []
    for i in range(count):
        speaker, emotion = i % cfg.speakers, cfg.emotions[(i // cfg.speakers) % len(cfg.emotions)]
        path = root / f"s{speaker:02d}" / f"{emotion}_{i:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synthesize_clip(cfg, speaker, emotion, i), cfg.sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def in_process(model: str, directory: Path, threads: int) -> dict[str, dict]:
    recognizer = EmotionRecognizer.from_pretrained(model, threads=threads)
    files = expand_inputs([str(directory)]).files
    waves = [recognizer.load_audio(f) for f in files]
    recognizer.runtime.warmup(seconds=(1.0,), repeats=3)
    passes = []
    for _ in range(2):  # first pass: every clip length is new to this process (as in a fresh CLI)
        start = time.perf_counter()
        for wave in waves:
            recognizer.predict_waves([wave])
        passes.append(time.perf_counter() - start)
    start = time.perf_counter()
    results = list(predict_files(recognizer, files))
    loop = time.perf_counter() - start
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    return {
        "predictor alone, first pass (lengths new to the process)": {"clips": len(waves), "seconds": passes[0]},
        "predictor alone, second pass (same lengths again)": {"clips": len(waves), "seconds": passes[1]},
        "predict_files (decode + checks + model), after both": {"clips": len(files), "seconds": loop},
        "_exit": recognizer.exit,
        "_runtime": recognizer.runtime.name,
    }


def console(model: str, directory: Path, threads: int) -> dict[str, dict]:
    """The console script over the directory, its --json lines read as they come: the
    first answer marks the end of start-up (interpreter, imports, model loading, first
    clip), the rest is the steady per-clip cost. One run, so a slow start-up elsewhere on
    the machine cannot make the difference of two runs meaningless."""
    exe = [str(BIN) if BIN.exists() else "emodistill"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([*exe, "predict", model, str(directory), "--json", "--threads", str(threads), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first, lines = None, 0
    for _ in proc.stdout:  # type: ignore[union-attr]
        lines += 1
        if first is None:
            first = time.perf_counter() - start
    err = proc.stderr.read()  # type: ignore[union-attr]
    total = time.perf_counter() - start
    if proc.wait() != 0 or first is None:
        raise SystemExit(f"emodistill predict failed: {err[-500:]}")
    return {
        "emodistill predict, start-up to the first answer": {"clips": 1, "seconds": first},
        "emodistill predict, the directory": {"clips": lines, "seconds": total},
        "emodistill predict, after the first answer": {"clips": lines - 1, "seconds": total - first},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/demo/checkpoint")
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="runs/bench/predict_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {"clips": args.clips, "threads": args.threads, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        root = Path(tmp)
        paths = write_clips(root / "clips", args.clips)
        audio = sum(sf.info(str(p)).duration for p in paths)
        print(f"# emodistill predict over {len(paths)} clips ({audio / len(paths):.2f} s mean, 16 kHz WAV), "
              f"{args.threads} threads\n")
        from emodistill.inference.export import ExportConfig, export

        exported = root / "int8"
        deepest = EmotionRecognizer.from_pretrained(args.checkpoint, warmup=False).exit
        export(ExportConfig(checkpoint=args.checkpoint, out=str(exported), exit=deepest, quantize="int8", repeats=5))
        rows = []
        for label, model in [("checkpoint, torch fp32", args.checkpoint), ("export, onnxruntime int8", str(exported))]:
            measured = in_process(model, root / "clips", args.threads)
            exit, runtime = measured.pop("_exit"), measured.pop("_runtime")
            measured.update(console(model, root / "clips", args.threads))
            first = measured["predictor alone, first pass (lengths new to the process)"]
            floor = first["clips"] / first["seconds"]  # a fresh CLI process meets every length for the first time too
            for path, m in measured.items():
                rate = m["clips"] / m["seconds"]
                rows.append([f"{label} ({exit})", path, m["clips"], f"{m['seconds']:.2f}", f"{rate:.1f}", f"{rate / floor:.2f}"])
            report["runs"].append({"model": label, "exit": exit, "runtime": runtime, "paths": measured})
        print(markdown_table(["model", "path", "clips", "seconds", "clips/s", "vs predictor alone (first pass)"], rows))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
