"""`emodistill evaluate CHECKPOINT DATASET`: accuracy and latency of every exit, against
the eGeMAPS floor, on the run's test speakers.

    which clips     the checkpoint's test part (folds or splits; never its selection
                    speakers), or --folds / --splits
    how prepared    the checkpoint's own preprocessing (e.g. the paper's fixed 5.984 s
                    windows), or --full-clips
    per exit        UAR, WA, macro-F1, confusion; latency of the cut model (batch 1,
                    warm-up, p50 / p95) at every clip length asked, on --device
                    (CUDA calls synchronised; the device and CPU threads recorded)
    the floor       eGeMAPS functionals + logistic regression trained on the run's own
                    training speakers, scored on the same clips, timed on the same clip
    policies        the paper's fusion and early-exit threshold sweeps, each timed as the
                    path it runs (conv encoder, blocks, and the head of every exit passed)
    objectives      the four sweep objectives (emodistill.evaluate.objectives)

Writes ``report.json``, ``report.md``, ``accuracy_latency.png`` and ``exit_profile.json``
(through :mod:`emodistill.exit_profile`; the serving router reads it).
"""

from __future__ import annotations

import json
import platform as _platform
from typing import Any

import numpy as np
import torch
from pydantic import Field

from emodistill.checkpoint import Checkpoint, load_checkpoint
from emodistill.config import Config
from emodistill.data.batching import BatchOptions, pad_batch
from emodistill.data.folds import Part, Selection, part_of
from emodistill.data.rows import load_arrays
from emodistill.data.schema import read_info
from emodistill.evaluate.latency import check_device, time_interleaved
from emodistill.evaluate.metrics import classification_metrics, exit_metrics
from emodistill.evaluate.objectives import objectives_of
from emodistill.evaluate.policies import early_exit, fusion_predictions
from emodistill.evaluate.tables import markdown_table
from emodistill.exit_profile import FILE_NAME, DeviceInfo, ExitProfile, make_profile, write_profile
from emodistill.exits import exit_block
from emodistill.storage import S3Options, get_fs, join, write_bytes_atomic


class EvaluateConfig(Config):
    """What to evaluate and how latency is measured."""

    checkpoint: str = Field(description="Checkpoint directory (local or s3://).")
    dataset: str = Field(description="Dataset URI.")
    folds: list[int] | None = Field(None, description="Folds to evaluate (default: the test part of the checkpoint's run).")
    splits: list[str] | None = Field(None, description="Splits to evaluate instead of folds.")
    out: str | None = Field(None, description="Output directory (default: report/ beside the checkpoint).")
    batch_size: int = Field(8, ge=1, description="Clips per forward pass for accuracy.")
    latency_seconds: list[float] = Field(
        default_factory=lambda: [1.0, 3.0, 6.0], description="Clip lengths at which latency is profiled."
    )
    repeats: int = Field(20, ge=1, description="Timed runs per exit and clip length.")
    warmup: int = Field(3, ge=0, description="Untimed runs first.")
    threads: int | None = Field(None, ge=1, description="torch threads while timing (default: torch's choice).")
    device: str = Field("cpu", description="Where latency is measured: cpu, cuda or cuda:<n> (recorded in exit_profile.json).")
    thresholds: int = Field(21, ge=2, description="Points of each early-exit threshold sweep.")
    s3: S3Options = Field(default_factory=S3Options, description="S3 settings.")
    preprocessing: str = Field(
        "checkpoint",
        description="How clips are prepared: 'checkpoint' (as the run validated, e.g. fixed windows) or 'full' clips.",
    )
    baseline: bool = Field(True, description="Also train and score the eGeMAPS + logistic-regression floor.")
    latency_budget_ms: float = Field(100.0, gt=0, description="Budget of the budget_uar objective (batch 1, p50).")


# ---- which clips, prepared how -------------------------------------------------------------


def eval_part(cfg: EvaluateConfig, selection: Selection | None) -> tuple[Part, str]:
    """The part to evaluate and where it came from (``--folds``/``--splits``, or the run's test part)."""
    if cfg.folds is not None or cfg.splits is not None:
        return part_of(cfg.folds, cfg.splits), "given"
    if selection is None:
        raise ValueError("the checkpoint records no train/val/test selection; pass --folds or --splits")
    if selection.test is None:
        raise ValueError("the checkpoint's run held no test part (test_folds: []); pass --folds or --splits")
    return selection.test, "the run's test part"


def eval_options(cfg: EvaluateConfig, loaded: Checkpoint) -> BatchOptions:
    """The checkpoint's own preparation of held-out clips, unless full clips are asked for."""
    if cfg.preprocessing == "full":
        return BatchOptions(mode="full")
    if cfg.preprocessing != "checkpoint":
        raise ValueError(f"preprocessing must be 'checkpoint' or 'full', got {cfg.preprocessing!r}")
    return loaded.config.prep.val_batch  # crop mode: crops seeded per clip (rows.clip_rng)


@torch.inference_mode()
def predict_all(model, waves: list[np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Logits of every exit for every clip ({exit: (n, classes)}), clips sorted by length
    into batches to limit padding (padding does not change answers)."""
    order = np.argsort([w.size for w in waves], kind="stable")
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x, mask = pad_batch([waves[i] for i in idx])
        result = model(x, mask)
        for name, ex in result.exits.items():
            out.setdefault(name, np.zeros((len(waves), ex.logits.shape[1]), np.float32))[idx] = ex.logits.numpy()
    return out


def score_checkpoint(
    checkpoint: str | Checkpoint, dataset: str, part: Part, *, s3: S3Options | None = None, batch_size: int = 8,
    options: BatchOptions | None = None,
) -> dict[str, dict]:
    """Per-exit classification metrics of ``checkpoint`` on the clips of ``part``, prepared
    as the checkpoint validated (or ``options``). No latency, no files."""
    loaded = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, s3=s3)
    arrays = load_arrays(dataset, part=part, options=options or loaded.config.prep.val_batch, s3=s3)
    logits = predict_all(loaded.model, list(arrays["waveform"]), batch_size)
    return exit_metrics(logits, np.asarray(arrays["label_id"], dtype=np.int64), len(loaded.model.labels))


# ---- the classical floor ----------------------------------------------------------------------


def baseline_report(
    dataset: str, train: Part, test: Part, num_classes: int, *, s3: S3Options | None = None,
    latency_seconds: float | None = None, repeats: int = 5, seed: int = 0,
) -> dict:
    """eGeMAPS + logistic regression trained on ``train``'s clips, scored on ``test``'s
    (whole clips, as SER papers compute utterance functionals); timed on one clip of
    ``latency_seconds`` (features + classifier, batch 1)."""
    from emodistill.evaluate.baseline import NAME, egemaps_features, fit_baseline
    from emodistill.evaluate.latency import time_call

    full = BatchOptions(mode="full")
    tr = load_arrays(dataset, part=train, options=full, s3=s3)
    te = load_arrays(dataset, part=test, options=full, s3=s3)
    model = fit_baseline(egemaps_features(list(tr["waveform"])), tr["label_id"], num_classes, seed=seed)
    preds = model.predict(egemaps_features(list(te["waveform"])))
    out = {
        "name": NAME,
        "features": "eGeMAPSv02 functionals (88)",
        "train_clips": int(len(tr["label_id"])),
        "test_clips": int(len(te["label_id"])),
        "train_speakers": sorted(set(tr["speaker"].tolist())),
        **classification_metrics(te["label_id"], preds, num_classes),
    }
    if latency_seconds:
        clip = np.random.default_rng(0).standard_normal(int(latency_seconds * 16000)).astype(np.float32) * 0.1
        stats = time_call(lambda: model.predict(egemaps_features([clip], workers=1)), warmup=1, repeats=repeats)
        out["latency_ms_p50"] = round(stats["latency_ms_p50"], 3)
        out["latency_ms_p95"] = round(stats["latency_ms_p95"], 3)
    return out


# ---- latency ---------------------------------------------------------------------------------


@torch.inference_mode()
def profile_latency(
    model, seconds: list[float], repeats: int, warmup: int, device: str = "cpu"
) -> dict[str, dict[str, dict[str, float]]]:
    """{exit: {"<seconds>": {"p50", "p95"}}}: batch-1 latency of each cut model on ``device`` (ms)."""
    device = check_device(device)
    cuts = {name: model.cut(name).to(device).eval() for name in model.exit_names}
    table: dict[str, dict[str, dict[str, float]]] = {name: {} for name in cuts}
    gen = torch.Generator().manual_seed(0)
    for length in seconds:
        clip = (torch.randn(1, int(length * 16000), generator=gen) * 0.1).to(device)
        stats = time_interleaved({n: (lambda c=c: c(clip)) for n, c in cuts.items()}, warmup, repeats, device)
        for name, s in stats.items():
            table[name][f"{length:g}"] = {"p50": round(s["latency_ms_p50"], 3), "p95": round(s["latency_ms_p95"], 3)}
    return table


@torch.inference_mode()
def profile_policies(model, seconds: float, repeats: int, warmup: int, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Batch-1 latency (ms) of the paths the multi-exit policies run, timed as they run:

    ``cascade:<exit>``: a clip that stops at <exit> after passing every shallower exit
    (conv encoder, blocks up to <exit>, and the heads of <exit> and of every exit before
    it); ``fusion``: every student exit (blocks up to the deepest student, every student
    head). The cut model of each exit is timed alongside, so the table shows what the
    passed heads cost."""
    names = model.exit_names
    model = model.to(device)
    clip = (torch.randn(1, int(seconds * 16000), generator=torch.Generator().manual_seed(1)) * 0.1).to(device)
    fns = {f"cut:{n}": (lambda c=model.cut(n).to(device).eval(): c(clip)) for n in names}
    fns.update({f"cascade:{n}": (lambda k=names[: i + 1]: model(clip, exits=k)) for i, n in enumerate(names)})
    if len(names) > 2:
        fns["fusion"] = lambda: model(clip, exits=names[:-1])
    stats = time_interleaved(fns, warmup, repeats, device)
    return {k: {"p50": round(v["latency_ms_p50"], 3), "p95": round(v["latency_ms_p95"], 3)} for k, v in stats.items()}


# ---- the report ------------------------------------------------------------------------------


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = check_device(cfg.device)  # before any work: a missing GPU fails here
    loaded = load_checkpoint(cfg.checkpoint, s3=cfg.s3)
    model, training = loaded.model, loaded.config.training
    info = read_info(cfg.dataset, cfg.s3)
    if info.labels != model.labels:
        raise ValueError(f"dataset labels {info.labels} differ from the model's {model.labels}")
    selection = training.selection
    part, source = eval_part(cfg, selection)
    options = eval_options(cfg, loaded)
    arrays = load_arrays(cfg.dataset, part=part, options=options, s3=cfg.s3)
    waves = list(arrays["waveform"])
    if not waves:
        raise ValueError(f"no clips in {part.describe()} of {cfg.dataset}")
    labels = np.asarray(arrays["label_id"], dtype=np.int64)
    num_classes = len(model.labels)
    tested = sorted(set(arrays["speaker"].tolist()))
    selected_on = (selection.speakers.get("val") or []) if selection else []
    overlap = sorted(set(tested) & set(selected_on))
    if selection is not None and not selection.speakers and selection.val == part:
        overlap = tested  # an older checkpoint: selected on the very clips evaluated here
    trained_on = sorted(set(tested) & set((selection.train.speaker_list(info) or []) if selection else []))

    logits = predict_all(model, waves, cfg.batch_size)
    per_exit = exit_metrics(logits, labels, num_classes)
    latency = profile_latency(model, cfg.latency_seconds, cfg.repeats, cfg.warmup, device)
    median_seconds = float(np.median([w.size for w in waves])) / 16000
    ref = min(cfg.latency_seconds, key=lambda s: abs(s - median_seconds))
    paths = profile_policies(model, ref, cfg.repeats, cfg.warmup, device)

    names = model.exit_names
    exits = {}
    for name in names:
        exits[name] = {
            "block": exit_block(name),
            **{k: per_exit[name][k] for k in ("uar", "wa", "macro_f1")},
            "latency_ms_p50": latency[name][f"{ref:g}"]["p50"],
            "latency_ms_p95": latency[name][f"{ref:g}"]["p95"],
            "cascade_ms_p50": paths[f"cascade:{name}"]["p50"],
            "confusion": per_exit[name]["confusion"],
        }
    policies = policy_curves(logits, labels, num_classes, names, paths, cfg.thresholds)

    baseline = None
    if cfg.baseline:
        if selection is None or not (selection.train.folds or selection.train.splits):
            baseline = {"skipped": "the checkpoint records no training part to fit the baseline on"}
        else:
            baseline = baseline_report(
                cfg.dataset, selection.train, part, num_classes, s3=cfg.s3, latency_seconds=ref,
                repeats=max(3, cfg.repeats // 4),
            )

    measured_on = DeviceInfo.current(device)
    report = {
        "num_classes": num_classes,
        "labels": model.labels,
        "checkpoint": str(cfg.checkpoint),
        "train": {
            "dataset": training.dataset,
            "part": selection.train.describe() if selection else None,
            "speakers": selection.speakers.get("train") if selection else None,
            "epoch": training.epoch,
        },
        "selection": {
            "part": selection.val.describe() if selection else None,
            "speakers": selected_on or None,
            "metric": training.train_config.get("run", {}).get("checkpoint_metric"),
        },
        "eval": {
            "dataset": cfg.dataset, "part": part.describe(), "source": source, "folds": part.folds, "splits": part.splits,
            "speakers": tested, "clips": len(waves), "median_seconds": median_seconds,
            "preprocessing": options.model_dump(), "selected_on_these_speakers": overlap,
            "trained_on_these_speakers": trained_on,
        },
        "latency_clip_seconds": ref,
        "hardware": {"machine": _platform.machine(), "processor": _platform.processor(), "torch_threads": torch.get_num_threads()},
        "device": measured_on.model_dump(),
        "exits": exits,
        "baseline": baseline,
        "policies": policies,
        "objectives": objectives_of(
            {n: exits[n]["uar"] for n in names}, {n: exits[n]["latency_ms_p50"] for n in names}, cfg.latency_budget_ms
        ),
        "latency_budget_ms": cfg.latency_budget_ms,
    }
    profile = make_profile(
        model={"name": loaded.name, "version": loaded.version, "checkpoint": str(cfg.checkpoint)},
        labels=model.labels,
        device=measured_on,
        uar={n: exits[n]["uar"] for n in names},
        latency={n: latency[n] for n in names},
        sample_rate=loaded.config.sample_rate,
    )
    out = cfg.out or default_out(cfg.checkpoint)
    _write_outputs(out, report, profile, cfg.s3)
    report["out"] = out
    return report


def policy_curves(
    logits: dict[str, np.ndarray], labels: np.ndarray, num_classes: int, names: list[str],
    paths: dict[str, dict[str, float]], thresholds: int,
) -> dict[str, Any]:
    """Fusion and early-exit sweeps; each point's latency is that of the path its clips ran
    (``profile_policies``): a clip stopping at exit k paid every head before k too."""
    cascade = {n: paths[f"cascade:{n}"]["p50"] for n in names}
    policies: dict[str, Any] = {}
    if len(names) > 2:
        students = names[:-1]
        fused = classification_metrics(labels, fusion_predictions(logits, students), num_classes)
        policies["fusion"] = {
            "exits": students, "uar": fused["uar"], "wa": fused["wa"], "mean_latency_ms": paths["fusion"]["p50"],
        }
    for criterion, grid in (("margin", np.linspace(0, 1, thresholds)), ("entropy", np.linspace(1, 0, thresholds))):
        sweep = []
        for t in grid:
            preds, stop = early_exit(logits, criterion, float(t))
            stopped = [names[i] for i in stop]
            sweep.append(
                {
                    "threshold": round(float(t), 4),
                    "uar": classification_metrics(labels, preds, num_classes)["uar"],
                    "mean_block": float(np.mean([exit_block(n) for n in stopped])),
                    "mean_latency_ms": float(np.mean([cascade[n] for n in stopped])),
                }
            )
        policies[f"early_exit_{criterion}"] = sweep
    return policies


def default_out(checkpoint: str) -> str:
    """``report/`` beside the checkpoint directory."""
    ckpt = str(checkpoint).rstrip("/")
    return join(ckpt.rsplit("/", 1)[0] if "/" in ckpt else ".", "report")


EXIT_HEADERS = ["exit", "block", "UAR", "WA", "macro-F1", "p50 ms", "p95 ms"]


def _device_text(report: dict) -> str:
    if "device" in report:
        return DeviceInfo.model_validate(report["device"]).describe()
    return f"{report['hardware']['torch_threads']} threads"  # reports written before the device was recorded


def exit_rows(report: dict) -> list[list]:
    """One row per exit, then the eGeMAPS floor (when scored)."""
    rows = [
        [n, e["block"], e["uar"], e["wa"], e["macro_f1"], e["latency_ms_p50"], e["latency_ms_p95"]]
        for n, e in report["exits"].items()
    ]
    b = report.get("baseline") or {}
    if "uar" in b:
        rows.append([b["name"], "-", b["uar"], b["wa"], b["macro_f1"], b.get("latency_ms_p50", "-"), b.get("latency_ms_p95", "-")])
    return rows


def _epoch(epoch) -> str:
    return "epoch unknown" if epoch is None else f"epoch {epoch + 1}"


def _speakers(who) -> str:
    return ", ".join(who) if who else "(by split)"


def markdown_report(report: dict) -> str:
    ev, tr, sel = report["eval"], report["train"], report["selection"]
    lines = [
        "# Evaluation report",
        "",
        f"checkpoint `{report['checkpoint']}` ({_epoch(tr['epoch'])}); dataset `{ev['dataset']}`, {ev['part']} "
        f"({ev['source']}), {ev['clips']} clips prepared as `{ev['preprocessing']['mode']}`; latency: batch 1, "
        f"{report['latency_clip_seconds']:g} s clip, {_device_text(report)}.",
        "",
        f"- trained on: {tr['part']}; speakers {_speakers(tr['speakers'])}",
        f"- checkpoint selected on ({sel['metric']}): speakers {_speakers(sel['speakers'])}",
        f"- tested on: speakers {_speakers(ev['speakers'])}",
    ]
    if ev.get("trained_on_these_speakers"):
        lines.append(
            f"- **warning**: {', '.join(ev['trained_on_these_speakers'])} trained the model and are evaluated here"
        )
    if ev["selected_on_these_speakers"]:
        lines.append(
            f"- **warning**: the checkpoint was selected on {', '.join(ev['selected_on_these_speakers'])}, which are "
            "evaluated here: these numbers are optimistic"
        )
    lines += ["", markdown_table(EXIT_HEADERS, exit_rows(report)), ""]
    b = report.get("baseline") or {}
    if "uar" in b:
        lines += [f"`{b['name']}`: {b['features']} + class-balanced logistic regression, trained on the same "
                  f"{b['train_clips']} training clips, scored on the same {b['test_clips']} clips; its latency is "
                  "openSMILE feature extraction + the classifier on one clip.", ""]
    elif b:
        lines += [f"eGeMAPS baseline: {b.get('skipped')}", ""]
    cascade = [[n, e["latency_ms_p50"], e["cascade_ms_p50"]] for n, e in report["exits"].items()]
    lines += ["## cost of stopping at each exit (ms, p50)", "",
              "A cascade that stops at an exit has run every shallower exit's head too.", "",
              markdown_table(["exit", "cut model alone", "cascade stopping here"], cascade), ""]
    if "fusion" in report["policies"]:
        f = report["policies"]["fusion"]
        lines += [f"Fusion of {', '.join(f['exits'])} (largest logit margin): UAR {f['uar']:.3f}, "
                  f"{f['mean_latency_ms']:.1f} ms per clip (every student head runs).", ""]
    for key in ("early_exit_margin", "early_exit_entropy"):
        rows = [[p["threshold"], p["uar"], p["mean_block"], p["mean_latency_ms"]] for p in report["policies"][key]]
        lines += [f"## {key.replace('_', ' ')}", "", markdown_table(["threshold", "UAR", "mean block", "mean ms"], rows), ""]
    o = report["objectives"]
    lines += ["## objectives (test speakers)", "", markdown_table(list(o), [list(o.values())]), ""]
    labels = report["labels"]
    for name, e in report["exits"].items():
        rows = [[labels[i], *row] for i, row in enumerate(e["confusion"])]
        lines += [f"## confusion {name} (rows: truth)", "", markdown_table(["", *labels], rows), ""]
    return "\n".join(lines)


def plot(report: dict) -> bytes:
    """accuracy_latency.png: UAR against latency per exit, the fusion and early-exit
    curves (cascade latency), chance, and the eGeMAPS floor as a line."""
    from emodistill.evaluate.plots import axes, png

    fig, ax = axes()
    xs = [e["latency_ms_p50"] for e in report["exits"].values()]
    ys = [e["uar"] for e in report["exits"].values()]
    ax.plot(xs, ys, "o-", color="tab:blue", label="single exit (cut model)")
    for name, x, y in zip(report["exits"], xs, ys):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for key, color in (("early_exit_margin", "tab:orange"), ("early_exit_entropy", "tab:green")):
        pts = sorted((p["mean_latency_ms"], p["uar"]) for p in report["policies"][key])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".--", color=color, alpha=0.8,
                label=key.replace("_", " ") + " (cascade)")
    if "fusion" in report["policies"]:
        f = report["policies"]["fusion"]
        ax.plot([f["mean_latency_ms"]], [f["uar"]], "s", color="tab:red", label="fusion (paper)")
    b = report.get("baseline") or {}
    if "uar" in b:  # a line, not a point: its latency (openSMILE) would squeeze the exits into a corner
        cost = f", {b['latency_ms_p50']:.0f} ms" if "latency_ms_p50" in b else ""
        ax.axhline(b["uar"], color="tab:purple", lw=1.2, ls="-.", label=f"eGeMAPS + LR floor (UAR {b['uar']:.3f}{cost})")
    ax.axhline(1 / report["num_classes"], color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlabel(f"latency per clip, ms (batch 1, {report['latency_clip_seconds']:g} s clip)")
    ax.set_ylabel("UAR (test speakers)")
    ax.set_title("Accuracy against latency per exit")
    return png(fig, ax)


def _write_outputs(out: str, report: dict, profile: ExitProfile, s3: S3Options) -> None:
    fs, root = get_fs(out, s3)
    fs.makedirs(root, exist_ok=True)
    write_bytes_atomic(fs, join(root, "report.json"), json.dumps(report, indent=2).encode())
    write_bytes_atomic(fs, join(root, "report.md"), markdown_report(report).encode())
    write_profile(join(out, FILE_NAME), profile, s3)
    write_bytes_atomic(fs, join(root, "accuracy_latency.png"), plot(report))
