"""What the recipe's input holds: a linear model on utterance statistics of the log-mel +
pitch front-end, against the eGeMAPS floor and the network, on the same folds.

For each clip of a corpus built by bench/recipe_vs_baseline.py, the fixed (untrained)
``logmel_pitch`` analysis gives 64 log-mel bands and the voicing, voiced log-pitch and
energy tracks; their utterance statistics (per band: mean, sd and the sd of its frame
differences; voicing mean/sd and voiced share; pitch mean, sd, 20th/80th percentiles and
their range over voiced frames; energy mean, sd, 20-80 range and mean absolute change;
duration: 207 numbers; with --keep-level the clip is not normalised first, so its
recording level stays in them) are standardised on the training folds and fed to the same
class-balanced logistic regression as the floor (``emodistill.evaluate.baseline``).
Speaker-independent like the floor: train on 3 folds, test on the 4th.

If this linear model scores above the network that sees the same input, the network is
not short of information: it fails to learn, from a handful of training voices, what
generalises to new ones.

    .venv/bin/python bench/frontend_probe.py --corpora demo,alt,noisy [--keep-level] [--root DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_vs_baseline as recipe  # noqa: E402  (the corpora, folds and baseline)

from emodistill.evaluate.baseline import fit_baseline  # noqa: E402
from emodistill.evaluate.metrics import classification_metrics  # noqa: E402
from emodistill.model.frontend import LOGMEL, LogMelFrontEnd  # noqa: E402


def statistics(frontend: LogMelFrontEnd, wave: np.ndarray, keep_level: bool = False) -> np.ndarray:
    """One clip's utterance statistics of the front-end's tracks (see the module docstring)."""
    x = torch.tensor(wave, dtype=torch.float32)[None]
    if not keep_level:  # what the model's waveform normalisation (`normalize_waveform`) does
        x = (x - x.mean()) / (x.std() + 1e-7)
    with torch.no_grad():
        mel, prosody = frontend._analyse(x)
    mel, (voicing, voiced_f0, energy) = mel[0].numpy(), prosody[0].numpy()
    voiced = voicing > 0.5
    f0 = voiced_f0[voiced] / np.maximum(voicing[voiced], 1e-3) if voiced.any() else np.zeros(1)
    p20, p80 = np.percentile(f0, [20, 80])
    e20, e80 = np.percentile(energy, [20, 80])
    parts = [
        mel.mean(1), mel.std(1), np.diff(mel, axis=1).std(1),
        [voicing.mean(), voicing.std(), voiced.mean()],
        [f0.mean(), f0.std(), p20, p80, p80 - p20],
        [energy.mean(), energy.std(), e80 - e20, np.abs(np.diff(energy)).mean()],
        [wave.size / 16000],
    ]  # fmt: skip
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default="demo,alt,noisy", help="Comma-separated: demo, alt, noisy, espeak.")
    parser.add_argument("--espeak", default=None, help="Directory of the espeak-ng corpus (for --corpora espeak).")
    parser.add_argument("--folds", type=int, default=4, help="Speaker-independent folds per corpus.")
    parser.add_argument("--root", default=str(recipe.ROOT / "runs/bench/recipe"), help="Where the corpora are kept.")
    parser.add_argument("--keep-level", action="store_true", help="Do not normalise each clip first (as the model "
                        "with `model.normalize_waveform: false`): the recording level stays in the statistics.")
    parser.add_argument("--out", default=None, help="JSON results (default: ROOT/frontend_probe.json).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    frontend = LogMelFrontEnd(LOGMEL["conv_dim"], LOGMEL["conv_kernel"], LOGMEL["conv_stride"], pitch=True).eval()
    results = {}
    for name in args.corpora.split(","):
        uri = recipe.build_corpus(name, Path(args.root), args.folds, args.espeak)
        labels, by_fold = recipe.load_folds(uri)
        floor = recipe.baseline_folds(uri, labels, by_fold)
        feats = {f: np.stack([statistics(frontend, w, args.keep_level) for w in d["waves"]]) for f, d in by_fold.items()}
        probe = {}
        for test in by_fold:
            train = [f for f in by_fold if f != test]
            model = fit_baseline(np.concatenate([feats[f] for f in train]),
                                 np.concatenate([by_fold[f]["labels"] for f in train]), len(labels))
            probe[test] = classification_metrics(by_fold[test]["labels"], model.predict(feats[test]), len(labels))["uar"]
        results[name] = {"probe_uar": probe, "baseline_uar": floor, "keep_level": args.keep_level}
        print(f"{name}: front-end statistics + logistic regression {recipe.mean_sd(probe.values())}, "
              f"eGeMAPS + logistic regression {recipe.mean_sd(floor.values())} "
              f"(per fold: " + ", ".join(f"{f}: {probe[f]:.3f}/{floor[f]:.3f}" for f in sorted(probe)) + ")", flush=True)
    out = Path(args.out or Path(args.root) / "frontend_probe.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
