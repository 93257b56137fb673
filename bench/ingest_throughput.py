"""Ingest speed against decoding alone, on the same files in the same run.

  A. decode alone: soundfile read + soxr resample to 16 kHz, one process, every file
  B. `ingest` with 1 worker: read, sha256, decode, checks, FLAC encode, shards, rejects
  C. `ingest` with all cores (the default)
Files per second and audio-seconds per second; ratios B/A and C/A.

    .venv/bin/python bench/ingest_throughput.py              # synthesises a 22.05 kHz corpus
    .venv/bin/python bench/ingest_throughput.py --source DIR # any corpus ingest accepts
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from emodistill.data import audio
from emodistill.data.corpora import get_corpus
from emodistill.data.ingest import IngestConfig, ingest
from emodistill.storage import get_fs
from emodistill.data.synth import SynthConfig, synthesize
from emodistill.evaluate.tables import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="corpus to ingest (default: a synthetic one at 22.05 kHz)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    source = args.source
    if source is None:
        source = str(tmp / "corpus")
        synthesize(source, SynthConfig(sample_rate=22050))  # not 16 kHz, so soxr has work to do
    fs, root = get_fs(source)
    items = list(get_corpus("auto", fs, root).discover(fs, root))

    started = time.perf_counter()
    seconds = 0.0
    for item in items:
        seconds += audio.decode(item.path).size / audio.SAMPLE_RATE
    decode_s = time.perf_counter() - started

    rows = []
    for label, workers in (("ingest, 1 worker", 1), (f"ingest, {os.cpu_count()} workers", None)):
        started = time.perf_counter()
        ingest(IngestConfig(source=source, dest=str(tmp / f"ds-{workers}"), workers=workers), progress=False)
        elapsed = time.perf_counter() - started
        rows.append([label, len(items) / elapsed, seconds / elapsed, f"{decode_s / elapsed:.2f}"])
    rows.insert(0, ["decode alone (soundfile + soxr), 1 process", len(items) / decode_s, seconds / decode_s, "1.00"])
    print(f"{len(items)} files, {seconds / 60:.1f} min of audio\n")
    print(markdown_table(["path", "files/s", "audio s/s", "relative to decode"], rows))


if __name__ == "__main__":
    main()
