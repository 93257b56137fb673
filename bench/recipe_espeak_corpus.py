"""A corpus of real synthesised English speech with acted-emotion prosody (espeak-ng).

Not part of the product, the tests or `make demo` (CI has only PyPI): a local corpus for
`bench/recipe_vs_baseline.py --espeak DIR`, unlike the numpy-synthesised demo corpus in
every respect: espeak-ng's formant synthesiser speaks English sentences (real phonemes,
words and intonation rules), each speaker is a voice variant (male/female/klatt voices of
en-us and en-gb), and emotions are acted through prosody only: speaking rate, pitch level,
pitch range, loudness and pauses between words, each drawn around the emotion's setting
per utterance, so the classes overlap.

    apt-get install -y espeak-ng
    .venv/bin/python bench/recipe_espeak_corpus.py runs/bench/espeak/corpus   # ~1 min

Writes ``DIR/wav/<speaker>/<speaker>_<emotion>_<nn>.wav`` (espeak-ng's 22.05 kHz; ingest
resamples) and ``DIR/manifest.csv`` (path,label,speaker). Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SENTENCES = [
    "The train leaves at seven tomorrow morning.",
    "I put the letters on the kitchen table.",
    "We will meet again after the holidays.",
    "She told me the results this afternoon.",
    "The windows in the hall were open all night.",
    "He bought a new coat for the winter.",
    "They moved to a small town near the coast.",
    "Your package arrived at the office today.",
    "The meeting has been moved to Thursday.",
    "I read the whole report last weekend.",
    "Our neighbours painted their fence blue.",
    "The shop on the corner closes at nine.",
    "It has been raining since the early morning.",
    "Please bring the documents to the second floor.",
    "The children walked home along the river.",
    "My brother called me from the airport.",
]

# voice variants as speakers: (speaker id, espeak-ng voice)
SPEAKERS = [
    ("us_m1", "en-us+m1"), ("us_m3", "en-us+m3"), ("us_m6", "en-us+m6"), ("us_f1", "en-us+f1"),
    ("us_f3", "en-us+f3"), ("gb_m2", "en-gb+m2"), ("gb_m4", "en-gb+m4"), ("gb_f2", "en-gb+f2"),
    ("gb_f4", "en-gb+f4"), ("us_klatt", "en-us+klatt"),
]  # fmt: skip

# emotion -> (words per minute, pitch 0-99, SSML pitch range %, amplitude 0-200 (100 peaks near
# 0.75 of full scale), word gap x10 ms)
EMOTIONS = {
    "neutral": (165, 50, 100, 60, 0),
    "angry": (190, 58, 160, 100, 1),
    "happy": (180, 70, 190, 75, 0),
    "sad": (138, 36, 45, 42, 2),
    "fearful": (205, 76, 80, 52, 2),
}


def say(voice: str, text: str, wpm: int, pitch: int, range_pct: int, amplitude: int, gap: int, out: Path) -> None:
    ssml = f'<speak><prosody range="{range_pct}%">{text}</prosody></speak>'
    cmd = ["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-a", str(amplitude), "-g", str(gap), "-m", "-w", str(out), ssml]
    subprocess.run(cmd, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="Corpus directory to write.")
    parser.add_argument("--utterances", type=int, default=12, help="Clips per speaker and emotion.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed (apt-get install -y espeak-ng)")
    out = Path(args.out)
    jobs = []
    for s, (speaker, voice) in enumerate(SPEAKERS):
        for e, (emotion, (wpm, pitch, rng_pct, amp, gap)) in enumerate(EMOTIONS.items()):
            for i in range(args.utterances):
                rng = np.random.default_rng([args.seed, s, e, i])
                text = SENTENCES[int(rng.integers(len(SENTENCES)))]
                params = (
                    int(wpm * rng.uniform(0.88, 1.12)),
                    int(np.clip(pitch + rng.normal(0, 6), 0, 99)),
                    int(max(10, rng_pct * rng.uniform(0.75, 1.25))),
                    int(np.clip(amp * rng.uniform(0.8, 1.2), 5, 200)),
                    int(max(0, gap + rng.integers(-1, 2))),
                )
                rel = f"wav/{speaker}/{speaker}_{emotion}_{i:02d}.wav"
                jobs.append((voice, text, params, rel, emotion, speaker))

    def run(job):
        voice, text, params, rel, emotion, speaker = job
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        say(voice, text, *params, path)
        return rel, emotion, speaker

    with ThreadPoolExecutor(2) as pool:
        rows = sorted(pool.map(run, jobs))
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label", "speaker"])
        writer.writerows(rows)
    print(f"{len(rows)} clips, {len(SPEAKERS)} speakers, emotions {list(EMOTIONS)} -> {out / 'manifest.csv'}")


if __name__ == "__main__":
    main()
