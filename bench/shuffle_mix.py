"""How mixed are training batches on a corpus recorded in dialogs? Distinct speakers and
labels per batch, the training pipeline before and after the shuffle fix, against a
uniform shuffle of the same rows (the ideal), same corpus, batch size and epochs.

The fake corpus is ordered like IEMOCAP: sessions of two speakers, dialogs within a
session, and each dialog mostly one emotion; utterance ids sort by session and dialog.

  before        rows stored in utterance-id order (what ingest wrote), a block order fixed
                by one seed for every epoch, a 32-row local shuffle buffer (the old worker)
  global        what training reads now: rows in ingest's seeded order, a global shuffle
                of the whole training set, reseeded every epoch (data.shuffle: global)
  global, old storage   the same shuffle on the dialog-ordered storage (the shuffle alone)
  blocks        ingest's seeded order, block order reseeded every epoch, a 256-row local
                buffer (data.shuffle: blocks, for corpora too large to shuffle)
  uniform       numpy permutation of all rows, new every epoch (what a shuffle should reach)

    .venv/bin/python bench/shuffle_mix.py [--json runs/bench/shuffle_mix.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from emodistill.data.reader import batch_mix

EMOTIONS = ["angry", "happy", "neutral", "sad"]


def make_dialog_corpus(root: Path, sessions: int, dialogs: int, turns: int, seed: int = 0) -> Path:
    """Sessions of two speakers; each dialog alternates them and keeps one emotion 80% of turns."""
    rng = np.random.default_rng(seed)
    rows = []
    t = np.arange(int(0.3 * 16000)) / 16000
    for s in range(sessions):
        for d in range(dialogs):
            mood = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
            for k in range(turns):
                speaker = f"Ses{s:02d}{'FM'[k % 2]}"
                label = mood if rng.random() < 0.8 else EMOTIONS[int(rng.integers(len(EMOTIONS)))]
                rel = f"wav/Ses{s:02d}/dlg{d:02d}/turn{k:03d}.wav"
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                freq = 120 + 40 * s + 10 * EMOTIONS.index(label) + rng.uniform(-3, 3)
                sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype("float32"), 16000)
                rows.append((rel, label, speaker))
    with open(root / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "speaker"), *rows])
    return root


def ingest_corpus(source: Path, dest: Path, sorted_storage: bool) -> str:
    import emodistill.data.ingest as ingest_module

    saved = ingest_module.row_order_key
    if sorted_storage:  # what ingest did before: rows in utterance-id (session, dialog) order
        ingest_module.row_order_key = lambda uid, seed: uid
    try:
        ingest_module.ingest(ingest_module.IngestConfig(source=str(source), dest=str(dest), folds=2, workers=2), progress=False)
    finally:
        ingest_module.row_order_key = saved
    return str(dest)


def epochs_of(ds, epochs: int, batch_size: int, buffer: int | None, seed_of_epoch) -> list[tuple[list, list]]:
    """Rows as one Ray Train worker sees them: its streaming split, epoch after epoch."""
    (split,) = ds.streaming_split(1, equal=True)
    out = []
    for epoch in range(epochs):
        speakers, labels, dialogs = [], [], []
        for b in split.iter_batches(batch_size=batch_size, batch_format="numpy", local_shuffle_buffer_size=buffer,
                                    local_shuffle_seed=seed_of_epoch(epoch) if buffer else None):
            speakers += list(b["speaker"])
            labels += [int(x) for x in b["label_id"]]
            dialogs += [u.rsplit("/", 1)[0] for u in b["utterance_id"]]
        out.append((speakers, labels, dialogs))
    return out


def summarise(name: str, runs: list[tuple[list, list, list]], batch_size: int) -> dict:
    mixes = [batch_mix(s, lab, batch_size) for s, lab, _ in runs]
    dialogs = [batch_mix(d, lab, batch_size)["speakers_per_batch"] for _, lab, d in runs]  # distinct ids per batch
    return {
        "pipeline": name,
        "speakers_per_batch": float(np.mean([m["speakers_per_batch"] for m in mixes])),
        "labels_per_batch": float(np.mean([m["labels_per_batch"] for m in mixes])),
        "dialogs_per_batch": float(np.mean(dialogs)),
        "new_order_each_epoch": len({tuple(zip(*r)) for r in runs}) == len(runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--dialogs", type=int, default=6, help="Dialogs per session.")
    parser.add_argument("--turns", type=int, default=16, help="Utterances per dialog.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--block-mb", type=float, default=1.5,
        help="Ray Data's block size cap. A 128 MB block holds ~400 decoded 5 s clips of a real corpus (a few "
        "dialogs of one session); 1.5 MB holds ~80 of these 0.3 s clips (5 dialogs), the same proportion.",
    )
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args()

    import ray

    from emodistill.data.batching import BatchOptions
    from emodistill.data.folds import Part
    from emodistill.data.reader import read_dataset, training_dataset
    from emodistill.data.rows import load_arrays
    from emodistill.evaluate.tables import markdown_table

    tmp = Path(tempfile.mkdtemp(prefix="bench-shuffle-"))
    corpus = make_dialog_corpus(tmp / "corpus", args.sessions, args.dialogs, args.turns, args.seed)
    old = ingest_corpus(corpus, tmp / "sorted", sorted_storage=True)
    new = ingest_corpus(corpus, tmp / "seeded", sorted_storage=False)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.target_max_block_size = int(args.block_mb * 1024 * 1024)
    options = BatchOptions(mode="crop", max_seconds=1.0)
    part = Part()
    b, e, seed = args.batch_size, args.epochs, args.seed
    rows = []
    before = read_dataset(old, part=part, options=options, seed=seed).randomize_block_order(seed=seed)
    rows.append(summarise("before: id order, fixed block order, 32-row buffer",
                          epochs_of(before, e, b, 4 * b, lambda ep: seed + ep), b))
    rows.append(summarise("global shuffle, reseeded per epoch (default)",
                          epochs_of(training_dataset(new, part, options, seed=seed), e, b, None, None), b))
    rows.append(summarise("global shuffle on the id-ordered storage",
                          epochs_of(training_dataset(old, part, options, seed=seed), e, b, None, None), b))
    rows.append(summarise("blocks: seeded ingest order, block order per epoch, 256-row buffer",
                          epochs_of(training_dataset(new, part, options, seed=seed, shuffle="blocks"), e, b, 256,
                                    lambda ep: seed * 1000 + ep), b))
    arrays = load_arrays(new)
    speakers, labels = list(arrays["speaker"]), [int(x) for x in arrays["label_id"]]
    dialogs = [u.rsplit("/", 1)[0] for u in arrays["utterance_id"]]
    rng = np.random.default_rng(seed)
    uniform = []
    for _ in range(e):
        order = rng.permutation(len(speakers))
        uniform.append(([speakers[i] for i in order], [labels[i] for i in order], [dialogs[i] for i in order]))
    rows.append(summarise("uniform permutation (ideal)", uniform, b))
    ray.shutdown()

    n_speakers, n_labels = len(set(speakers)), len(set(labels))
    print(f"{len(speakers)} clips in {args.sessions * args.dialogs} dialogs ({args.sessions} sessions of 2 speakers, "
          f"{args.turns} turns, one emotion 80% of a dialog's turns); {n_speakers} speakers, {n_labels} labels; "
          f"batch {b}, {e} epochs, seed {seed}; Ray Data blocks of at most {args.block_mb:g} MB\n")
    print(markdown_table(
        ["pipeline", "speakers / batch", "labels / batch", "dialogs / batch", "new order each epoch"],
        [[r["pipeline"], r["speakers_per_batch"], r["labels_per_batch"], r["dialogs_per_batch"], r["new_order_each_epoch"]]
         for r in rows],
    ))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
