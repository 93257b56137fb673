"""Timelines of long recordings: real-time factor per model and exit, and peak memory
against the recording's length.

    .venv/bin/python bench/timeline_bench.py [--minutes 2] [--long-minutes 60] [--threads 2] [--json runs/bench/timeline.json]

Recordings: generated speech (the synth corpus' voices, 1-4 s utterances with 0.3-2 s
pauses, about 70 % speech), 16 kHz FLAC.

1. Real-time factor (audio seconds per wall second, higher is faster) of
   ``EmotionRecognizer.timeline`` on a ``--minutes`` recording (silero-vad, 3 s windows,
   1.5 s hop), for the demo model (tiny random-init wav2vec2 shape, exits 1-4) and a
   wav2vec2-base shape (random init) at exits 1, 4 and 12; beside them, in the same run, the
   floor: decoding + voice-activity detection with no model (silero and energy).
2. Peak memory (max RSS of a fresh process, and its growth over the process after loading
   the model) of the demo model's timeline of a 1-minute and a ``--long-minutes`` recording,
   each in its own process: the goal is flat.
Prints markdown tables, writes JSON (--json).
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

import numpy as np
import soundfile as sf
import torch

from emodistill.evaluate.tables import markdown_table


def write_recording(path: Path, minutes: float, seed: int = 0) -> float:
    """A call of generated speech and pauses, written block by block; its duration (s)."""
    from emodistill.data.synth import SynthConfig, synthesize_clip

    cfg = SynthConfig(seed=seed, min_seconds=1.0, max_seconds=4.0)
    rng = np.random.default_rng(seed)
    # one minute of material, repeated (generation is the slow part; the detector and model see the same)
    unit, k = [], 0
    while sum(u.size for u in unit) < 60 * 16000:
        speaker, emotion = k % cfg.speakers, cfg.emotions[k % len(cfg.emotions)]
        unit.append(synthesize_clip(cfg, speaker, emotion, k).astype(np.float32))
        unit.append(np.zeros(int(rng.uniform(0.3, 2.0) * 16000), dtype=np.float32))
        k += 1
    unit = np.concatenate(unit)[: 60 * 16000]
    total = int(minutes * 60 * 16000)
    with sf.SoundFile(path, "w", 16000, 1, format="FLAC", subtype="PCM_16") as fh:
        written = 0
        while written < total:
            n = min(unit.size, total - written)
            fh.write(unit[:n])
            written += n
    return total / 16000


def make_checkpoint(root: Path, arch: str, exits: list[int]) -> str:
    from emodistill.checkpoint import save_checkpoint
    from emodistill.model import BackboneConfig, ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig(arch=arch, overrides={"mask_time_prob": 0.0}), exits=exits,
                      student_head="mean", teacher_head="mean")
    path = root / f"{arch}-checkpoint"
    save_checkpoint(build_model(cfg, ["anger", "happiness", "neutral", "sadness"]), path, metadata={})
    return str(path)


def floor_rtf(path: Path, seconds: float, vad: str) -> float:
    from emodistill.data.audio import stream
    from emodistill.inference.segments import SegmentOptions, Segmenter
    from emodistill.inference.timeline import RECORDING_LIMITS

    t = time.perf_counter()
    seg = Segmenter(SegmentOptions(vad=vad))
    total = 0
    for block in stream(str(path), RECORDING_LIMITS):
        seg.feed(block)
        total += block.size
    seg.finish(total)
    return seconds / (time.perf_counter() - t)


def timeline_rtf(ckpt: str, exit: str, path: Path, seconds: float, vad: str = "silero") -> dict:
    from emodistill import EmotionRecognizer

    rec = EmotionRecognizer.from_pretrained(ckpt, exit=exit)
    t = time.perf_counter()
    tl = rec.timeline(str(path), vad=vad)
    wall = time.perf_counter() - t
    return {"rtf": seconds / wall, "wall_s": wall, "segments": len(tl.segments), "speech_s": sum(e - s for s, e in tl.speech)}


def memory_child(ckpt: str, path: str) -> None:
    """Run in a fresh process: print RSS after loading, peak RSS after the timeline (MiB)."""
    from emodistill import EmotionRecognizer
    from emodistill.inference.segments import SegmentOptions
    from emodistill.inference.timeline import iter_timeline

    rec = EmotionRecognizer.from_pretrained(ckpt, exit="exit_4")
    base = _status_mib("VmRSS")
    t = time.perf_counter()
    n = sum(1 for _ in iter_timeline(rec, path, SegmentOptions(vad="silero")))
    wall = time.perf_counter() - t
    # VmHWM: this process' peak RSS (ru_maxrss would carry the parent's peak over fork + exec)
    print(json.dumps({"loaded_mib": base, "peak_mib": _status_mib("VmHWM"), "segments": n, "wall_s": wall}))


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the real-time-factor recording")
    ap.add_argument("--long-minutes", type=float, default=60.0, help="the long recording of the memory test")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="runs/bench/timeline.json")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(*args.memory_child)

    with tempfile.TemporaryDirectory(prefix="timeline-bench-") as tmp:
        root = Path(tmp)
        rec_path = root / "call.flac"
        seconds = write_recording(rec_path, args.minutes)
        demo = make_checkpoint(root, "tiny", [1, 2, 3])
        base = make_checkpoint(root, "base", [1, 4]) if not args.memory_only else None
        rows, out = [], {"minutes": args.minutes, "threads": args.threads, "rtf": [], "memory": []}
        for vad in ("silero", "energy") if not args.memory_only else ():
            rtf = floor_rtf(rec_path, seconds, vad)
            rows.append([f"floor: decode + {vad} VAD, no model", "-", "-", f"{rtf:.0f}"])
            out["rtf"].append({"model": "none", "vad": vad, "rtf": rtf})
        for name, ckpt, exits in (("demo (tiny)", demo, ["exit_1", "exit_4"]), ("wav2vec2-base shape", base, ["exit_1", "exit_4", "exit_12"])) if not args.memory_only else ():
            for exit in exits:
                r = timeline_rtf(ckpt, exit, rec_path, seconds)
                rows.append([f"{name}, silero VAD", exit, r["segments"], f"{r['rtf']:.1f}"])
                out["rtf"].append({"model": name, "exit": exit, **r})
                print(f"  {name} {exit}: {r['rtf']:.1f}x real time", file=sys.stderr, flush=True)
        if not args.memory_only:
            print(f"\n### Timeline real-time factor ({args.minutes:g} min recording, "
              f"{out['rtf'][-1]['speech_s'] / seconds:.0%} speech, 3 s windows / 1.5 s hop, {args.threads} threads)\n")
            print(markdown_table(["path", "exit", "segments", "audio s per wall s"], rows))

        mem_rows = []
        for minutes in (1.0, args.long_minutes):
            p = root / f"mem-{minutes:g}.flac"
            write_recording(p, minutes, seed=1)
            res = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--memory-child", demo, str(p)],
                                 capture_output=True, text=True, check=True)
            m = json.loads(res.stdout.strip().splitlines()[-1])
            p.unlink()
            mem_rows.append([f"{minutes:g} min", m["segments"], f"{m['loaded_mib']:.0f}", f"{m['peak_mib']:.0f}",
                             f"{m['peak_mib'] - m['loaded_mib']:.0f}", f"{minutes * 60 / m['wall_s']:.0f}"])
            out["memory"].append({"minutes": minutes, **m})
            print(f"  memory {minutes:g} min: peak {m['peak_mib']:.0f} MiB", file=sys.stderr, flush=True)
        print("\n### Timeline peak memory (demo model exit_4, silero VAD, fresh process per recording)\n")
        print(markdown_table(["recording", "segments", "RSS after loading (MiB)", "peak RSS (MiB)", "growth (MiB)", "audio s per wall s"], mem_rows))
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
