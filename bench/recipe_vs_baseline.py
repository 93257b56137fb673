"""The CPU recipe against the eGeMAPS floor, speaker-independent, on several corpora.

For every corpus: speaker-independent folds (`emodistill ingest --folds K`); for every
test fold, the recipe (a training config, `jobs/configs/demo_cpu.yaml` by default) is
trained on the other folds and every exit is scored on the test fold; the eGeMAPS +
logistic-regression baseline (`emodistill.evaluate.baseline`) is fitted on exactly the
same training speakers and scored on the same test speakers. Nothing is selected on the
test speakers: the network is the last epoch (the schedule decays to 0), the baseline
has no knobs. Prints per corpus the baseline's UAR and each exit's UAR, mean ± sd over
folds (x seeds), and each exit's latency relative to the teacher (cut models, batch 1,
3 s clip, 1 thread, timed interleaved); writes everything to JSON.

Training runs in-process, without Ray (the same ``TrainStep``, loss, model, crops and
augmentation as `emodistill train`; ``num_workers`` x ``batch_size`` clips per optimiser
step, which is what DDP averages over), so the whole comparison needs no cluster.

Corpora (built on first use under --root, then reused):
  demo   the demo corpus (`emodistill synth` defaults): 12 speakers x 4 emotions x 10
  alt    other voices and another acting style: `prosody: alt`, `voices: wide`,
         10 speakers x 5 emotions (+ fearful) x 10
  noisy  the demo's voices in babble noise at 0..15 dB SNR and a reverberant room per
         speaker (RT60 0.3..0.9 s), another seed
  espeak real synthesised English speech (espeak-ng): only with --espeak DIR (a corpus
         written by bench/recipe_espeak_corpus.py; not needed by tests or `make demo`)

    .venv/bin/python bench/recipe_vs_baseline.py                      # demo, alt, noisy; 4 folds
    .venv/bin/python bench/recipe_vs_baseline.py --corpora demo --folds 4 --seeds 2
    .venv/bin/python bench/recipe_vs_baseline.py --espeak runs/bench/espeak/corpus --corpora espeak
    .venv/bin/python bench/recipe_vs_baseline.py --set optim.epochs=40 --set model.student_head=mean
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CORPORA: dict[str, dict] = {
    "demo": {},
    "alt": {
        "seed": 1,
        "prosody": "alt",
        "voices": "wide",
        "speakers": 10,
        "emotions": ["angry", "happy", "neutral", "sad", "fearful"],
    },
    "noisy": {"seed": 2, "noise": "babble", "snr_db": [0.0, 15.0], "reverb_rt60": [0.3, 0.9]},
}


# ---- corpora ---------------------------------------------------------------------------


def build_corpus(name: str, root: Path, folds: int, espeak: str | None) -> str:
    """The ingested dataset of corpus ``name`` (built once; rebuilt when its recipe changes)."""
    from emodistill.data.ingest import IngestConfig, ingest
    from emodistill.data.synth import SynthConfig, synthesize

    base = root / name
    if name == "espeak":
        if not espeak:
            raise SystemExit("corpus espeak needs --espeak DIR (made by bench/recipe_espeak_corpus.py)")
        source, recipe = str(Path(espeak).absolute()), {"espeak": str(Path(espeak).absolute())}
    else:
        source, recipe = str(base / "corpus"), CORPORA[name]
    stamp = hashlib.sha256(json.dumps({**recipe, "folds": folds}, sort_keys=True).encode()).hexdigest()[:12]
    data = base / f"data-{stamp}"
    if (data / "dataset.json").exists():
        return str(data)
    if name != "espeak":
        log(f"[{name}] synthesising {recipe or 'the demo corpus'}")
        synthesize(source, SynthConfig(**recipe))
    log(f"[{name}] ingesting into {folds} speaker-independent folds")
    ingest(IngestConfig(source=source, dest=str(data), folds=folds), progress=False)
    return str(data)


def load_folds(uri: str) -> tuple[list[str], dict[int, dict]]:
    """Labels and, per fold, {"waves", "labels", "speakers"} (decoded once, in this process)."""
    from emodistill.data.rows import load_arrays
    from emodistill.data.schema import read_info

    info = read_info(uri)
    by_fold = {}
    for fold in info.folds:
        arrays = load_arrays(uri, folds=[fold])
        speakers = sorted(s for s, f in info.speaker_folds.items() if f == fold)
        by_fold[fold] = {"waves": list(arrays["waveform"]), "labels": arrays["label_id"].astype(np.int64), "speakers": speakers}
    return info.labels, by_fold


# ---- the baseline ----------------------------------------------------------------------


def baseline_folds(uri: str, labels: list[str], by_fold: dict[int, dict]) -> dict[int, float]:
    """eGeMAPS + logistic regression, trained on the other folds, UAR on each fold."""
    from emodistill.evaluate.baseline import egemaps_features, fit_baseline
    from emodistill.evaluate.metrics import classification_metrics

    cache = Path(uri) / "egemaps.npz"
    if cache.exists():
        feats = dict(np.load(cache))
    else:
        feats = {str(f): egemaps_features(d["waves"]) for f, d in by_fold.items()}
        np.savez(cache, **feats)
    out = {}
    for test in by_fold:
        train = [f for f in by_fold if f != test]
        x = np.concatenate([feats[str(f)] for f in train])
        y = np.concatenate([by_fold[f]["labels"] for f in train])
        model = fit_baseline(x, y, len(labels))
        out[test] = classification_metrics(by_fold[test]["labels"], model.predict(feats[str(test)]), len(labels))["uar"]
    return out


# ---- the recipe, trained in-process ------------------------------------------------------


def train_in_process(cfg, labels, waves, ys, seed: int, trace=None, hooks=None):
    """The recipe's training on in-memory clips, as the Ray Train worker does it: per epoch
    a seeded shuffle and fresh random crops, ``TrainStep`` (augmentation included).
    ``trace(epoch, model, mean_train_loss)``, when given, runs after every epoch (diagnostics only).
    ``hooks`` (pilots only): ``hooks.setup(model, step, total_steps)`` once, then
    ``hooks.before(idx)`` and ``hooks.after()`` around every step on the clips ``idx``."""
    import torch

    from emodistill.data.batching import pad_batch, prepare
    from emodistill.losses import SelfDistillationLoss
    from emodistill.model import build_model
    from emodistill.train.step import TrainStep

    torch.manual_seed(seed)
    model = build_model(cfg.model, labels).train()
    batch = cfg.optim.batch_size * cfg.scaling.num_workers
    steps_per_epoch = math.ceil(len(waves) / (batch * cfg.optim.grad_accum))
    step = TrainStep(model, SelfDistillationLoss(cfg.loss), cfg.optim, steps_per_epoch * cfg.optim.epochs, augment=cfg.augment)
    if hooks is not None:
        hooks.setup(model, step, steps_per_epoch * cfg.optim.epochs)
    for epoch in range(cfg.optim.epochs):
        torch.manual_seed(seed * 1000 + epoch * 10)
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(waves))
        model.train()
        losses = []
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            x, mask = pad_batch([prepare(waves[i], cfg.data.train_batch, rng) for i in idx])
            if hooks is not None:
                hooks.before(idx)
            losses.append(step({"input_values": x, "attention_mask": mask, "labels": torch.as_tensor(ys[idx])}).total.item())
            if hooks is not None:
                hooks.after()
        if trace is not None:
            trace(epoch, model.eval(), float(np.mean(losses)))
    return model.eval()


def score_exits(model, waves, ys, num_classes: int, batch: int = 16) -> dict[str, float]:
    """UAR of every exit on whole clips (batches of similar length, padded and masked)."""
    import torch

    from emodistill.data.batching import pad_batch
    from emodistill.evaluate.metrics import exit_metrics

    order = np.argsort([w.size for w in waves], kind="stable")
    logits: dict[str, list] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            x, mask = pad_batch([waves[i] for i in idx])
            for name, out in model(x, mask).exits.items():
                logits.setdefault(name, []).append(out.logits.float().numpy())
    merged = {n: np.concatenate(v) for n, v in logits.items()}
    return {n: m["uar"] for n, m in exit_metrics(merged, np.asarray(ys)[order], num_classes).items()}


def run_fold(job: dict) -> dict:
    """One (corpus, test fold, seed): train on the other folds, score every exit on the test fold."""
    import torch

    torch.set_num_threads(job["threads"])
    from emodistill.train.config import TrainConfig

    cfg = TrainConfig.model_validate(job["config"])
    labels, by_fold = load_folds(job["uri"])
    train = [f for f in by_fold if f != job["test"]]
    waves = [w for f in train for w in by_fold[f]["waves"]]
    ys = np.concatenate([by_fold[f]["labels"] for f in train])
    test = by_fold[job["test"]]
    curve = []

    def trace(epoch, model, loss):
        if (epoch + 1) % job["trace"]:
            return
        seen = np.random.default_rng(0).permutation(len(waves))[:120]
        train_uar = score_exits(model, [waves[i] for i in seen], ys[seen], len(labels))
        test_uar = score_exits(model, test["waves"], test["labels"], len(labels))
        curve.append({"epoch": epoch + 1, "loss": loss, "train_uar": train_uar, "test_uar": test_uar})
        log(f"[{job['corpus']}] fold {job['test']} epoch {epoch + 1}: loss {loss:.3f}, train UAR "
            + " ".join(f"{u:.2f}" for u in train_uar.values()) + ", test UAR " + " ".join(f"{u:.2f}" for u in test_uar.values()))

    started = time.perf_counter()
    model = train_in_process(cfg, labels, waves, ys, cfg.seed + 7919 * job["seed"], trace if job["trace"] else None)
    seconds = time.perf_counter() - started
    uar = score_exits(model, test["waves"], test["labels"], len(labels))
    result = {**{k: job[k] for k in ("corpus", "test", "seed")}, "uar": uar, "train_seconds": seconds,
              "train_speakers": [s for f in train for s in by_fold[f]["speakers"]], "test_speakers": test["speakers"], "curve": curve}
    if job.get("profile"):
        from emodistill.evaluate.latency import profile_exits

        torch.set_num_threads(1)
        report = profile_exits(model, seconds=3.0, repeats=job["repeats"])
        result["latency"] = {n: r["latency_ms_p50"] for n, r in report["exits"].items()}
        result["latency"]["frontend"] = report["conv_encoder"]["latency_ms_p50"]
    log(f"[{job['corpus']}] fold {job['test']} seed {job['seed']}: "
        + " ".join(f"{n}={u:.3f}" for n, u in uar.items()) + f"  ({seconds:.0f} s)")
    return result


# ---- the report --------------------------------------------------------------------------


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def mean_sd(values) -> str:
    values = list(values)
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def corpus_table(name: str, baseline: dict[int, float], runs: list[dict]) -> str:
    from emodistill.evaluate.tables import markdown_table
    from emodistill.exits import sort_exits

    exits = sort_exits(runs[0]["uar"])
    latency = next((r["latency"] for r in runs if "latency" in r), None)
    teacher = exits[-1]
    rows = [["eGeMAPS + logistic regression", mean_sd(baseline.values()), len(baseline), "-", "-"]]
    for n in exits:
        values = [r["uar"][n] for r in runs]
        wins = sum(r["uar"][n] > baseline[r["test"]] for r in runs)
        ratio = f"{latency[n] / latency[teacher]:.2f}" if latency else "-"
        ms = f"{latency[n]:.1f}" if latency else "-"
        rows.append([n + (" (teacher)" if n == teacher else ""), mean_sd(values), f"{len(values)} ({wins} above)", ms, ratio])
    return f"### {name}\n\n" + markdown_table(["model", "UAR mean ± sd", "runs (> baseline)", "p50 ms", "vs teacher"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "jobs/configs/demo_cpu.yaml"), help="Training config (the recipe).")
    parser.add_argument("--set", action="append", default=[], help="key=value override of the config (repeatable).")
    parser.add_argument("--corpora", default="demo,alt,noisy", help="Comma-separated: demo, alt, noisy, espeak.")
    parser.add_argument("--espeak", default=None, help="Directory of the espeak-ng corpus (manifest.csv + wav/).")
    parser.add_argument("--folds", type=int, default=4, help="Speaker-independent folds per corpus.")
    parser.add_argument("--test-folds", default=None, help="Only these test folds (comma-separated), for pilots.")
    parser.add_argument("--seeds", type=int, default=1, help="Training seeds per fold.")
    parser.add_argument("--jobs", type=int, default=1, help="Folds trained in parallel (processes of --threads each).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process.")
    parser.add_argument("--repeats", type=int, default=30, help="Timed runs per exit for the latency ratios.")
    parser.add_argument("--trace", type=int, default=0, help="Diagnostics: every N epochs, log train and test UAR "
                        "(test-fold curves are for understanding only; nothing is selected on them).")
    parser.add_argument("--baseline-only", action="store_true", help="Only the eGeMAPS baseline per fold (no training).")
    parser.add_argument("--root", default=str(ROOT / "runs/bench/recipe"), help="Where corpora are built and kept.")
    parser.add_argument("--out", default=None, help="JSON results (default: ROOT/recipe_vs_baseline.json).")
    args = parser.parse_args()

    from emodistill.train.config import TrainConfig

    cfg = TrainConfig.from_yaml(args.config, ["data.dataset=unused", *args.set])
    root = Path(args.root)
    results = {"config": args.config, "overrides": args.set, "folds": args.folds, "seeds": args.seeds, "corpora": {}}
    tables = []
    for name in args.corpora.split(","):
        uri = build_corpus(name, root, args.folds, args.espeak)
        labels, by_fold = load_folds(uri)
        log(f"[{name}] {sum(len(d['labels']) for d in by_fold.values())} clips, labels {labels}; eGeMAPS baseline")
        baseline = baseline_folds(uri, labels, by_fold)
        tests = [int(f) for f in args.test_folds.split(",")] if args.test_folds else sorted(by_fold)
        if args.baseline_only:
            print(f"{name}: eGeMAPS baseline UAR {mean_sd(baseline.values())} over folds "
                  + ", ".join(f"{f}: {u:.3f}" for f, u in sorted(baseline.items())), flush=True)
            continue
        jobs = [
            {"corpus": name, "uri": uri, "test": t, "seed": s, "threads": args.threads, "repeats": args.repeats, "trace": args.trace,
             "config": cfg.model_dump(mode="json"), "profile": (t == tests[0] and s == 0)}
            for s in range(args.seeds) for t in tests
        ]
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                runs = list(pool.map(run_fold, jobs))
        else:
            runs = [run_fold(j) for j in jobs]
        baseline = {t: baseline[t] for t in tests}
        results["corpora"][name] = {"dataset": uri, "labels": labels, "baseline_uar": baseline, "runs": runs}
        tables.append(corpus_table(name, baseline, runs))
        print(tables[-1] + "\n", flush=True)
    out = Path(args.out or root / "recipe_vs_baseline.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    log(f"results: {out}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
