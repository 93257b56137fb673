"""`emodistill evaluate CHECKPOINT DATASET`: accuracy and latency of every exit.

Per exit on the held-out data: UAR, WA, macro-F1, confusion matrix, and the latency of
the cut model on the chosen device (``device``: cpu or cuda; batch 1, warm-up, median and
p95; CUDA calls synchronised, CPU thread count recorded). Then the paper's
fusion and early-exit threshold sweeps (UAR against mean compute per clip). Writes
``report.json``, ``report.md``, ``accuracy_latency.png`` and ``exit_profile.json`` (per
exit: block, UAR, latency by clip length; the serving router reads it).
"""

from __future__ import annotations

import json
import platform as _platform
from typing import Any

import numpy as np
import torch
from pydantic import Field

from emodistill.checkpoint import load_checkpoint
from emodistill.config import Config
from emodistill.data.batching import BatchOptions, pad_batch
from emodistill.data.rows import load_arrays
from emodistill.data.schema import read_info
from emodistill.storage import S3Options, get_fs, join, write_bytes_atomic
from emodistill.evaluate.latency import check_device, time_interleaved
from emodistill.evaluate.metrics import classification_metrics, exit_metrics
from emodistill.evaluate.policies import early_exit, fusion_predictions
from emodistill.evaluate.tables import markdown_table
from emodistill.exit_profile import FILE_NAME, DeviceInfo, ExitProfile, make_profile, write_profile
from emodistill.model import exit_block


class EvaluateConfig(Config):
    """What to evaluate and how latency is measured."""

    checkpoint: str = Field(description="Checkpoint directory (local or s3://).")
    dataset: str = Field(description="Dataset URI.")
    folds: list[int] | None = Field(None, description="Folds to evaluate (default: the held-out folds of the checkpoint).")
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


def _selection(cfg: EvaluateConfig, metadata: dict) -> tuple[list[int] | None, list[str] | None]:
    if cfg.splits is not None:
        return None, cfg.splits
    if cfg.folds is not None:
        return cfg.folds, None
    if metadata.get("val_splits"):
        return None, list(metadata["val_splits"])
    if metadata.get("val_folds"):
        return list(metadata["val_folds"]), None
    raise ValueError("the checkpoint records no held-out folds; pass --folds or --splits")


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


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = check_device(cfg.device)  # before any work: a missing GPU fails here
    loaded = load_checkpoint(cfg.checkpoint)
    model, meta = loaded.model, loaded.config.metadata
    info = read_info(cfg.dataset, cfg.s3)
    if info.labels != model.labels:
        raise ValueError(f"dataset labels {info.labels} differ from the model's {model.labels}")
    folds, splits = _selection(cfg, meta)
    arrays = load_arrays(cfg.dataset, folds=folds, splits=splits, options=BatchOptions(mode="full"), s3=cfg.s3)
    waves = list(arrays["waveform"])
    if not waves:
        raise ValueError(f"no clips in folds={folds} splits={splits} of {cfg.dataset}")
    labels = np.asarray(arrays["label_id"], dtype=np.int64)
    num_classes = len(model.labels)

    logits = predict_all(model, waves, cfg.batch_size)
    per_exit = exit_metrics(logits, labels, num_classes)
    latency = profile_latency(model, cfg.latency_seconds, cfg.repeats, cfg.warmup, device)
    median_seconds = float(np.median([w.size for w in waves])) / 16000
    ref = min(cfg.latency_seconds, key=lambda s: abs(s - median_seconds))

    exits = {}
    for name in model.exit_names:
        exits[name] = {
            "block": exit_block(name),
            **{k: per_exit[name][k] for k in ("uar", "wa", "macro_f1")},
            "latency_ms_p50": latency[name][f"{ref:g}"]["p50"],
            "latency_ms_p95": latency[name][f"{ref:g}"]["p95"],
            "confusion": per_exit[name]["confusion"],
        }

    names = model.exit_names
    cost = {n: exits[n]["latency_ms_p50"] for n in names}
    policies: dict[str, Any] = {}
    if len(names) > 2:
        students = names[:-1]
        fused = classification_metrics(labels, fusion_predictions(logits, students), num_classes)
        policies["fusion"] = {
            "exits": students,
            "uar": fused["uar"],
            "wa": fused["wa"],
            "mean_latency_ms": cost[students[-1]],  # every student runs: the deepest student's cut
        }
    for criterion, grid in (("margin", np.linspace(0, 1, cfg.thresholds)), ("entropy", np.linspace(1, 0, cfg.thresholds))):
        sweep = []
        for t in grid:
            preds, stop = early_exit(logits, criterion, float(t))
            stopped = [names[i] for i in stop]
            sweep.append(
                {
                    "threshold": round(float(t), 4),
                    "uar": classification_metrics(labels, preds, num_classes)["uar"],
                    "mean_block": float(np.mean([exit_block(n) for n in stopped])),
                    # hidden states are reused going deeper, so a clip costs about the cut at its stop exit
                    "mean_latency_ms": float(np.mean([cost[n] for n in stopped])),
                }
            )
        policies[f"early_exit_{criterion}"] = sweep

    measured_on = DeviceInfo.current(device)
    report = {
        "num_classes": num_classes,
        "labels": model.labels,
        "checkpoint": str(cfg.checkpoint),
        "train": {
            "folds": meta.get("train_folds"),
            "splits": meta.get("train_splits"),
            "dataset": meta.get("dataset"),
            "epoch": meta.get("epoch"),
        },
        "eval": {"dataset": cfg.dataset, "folds": folds, "splits": splits, "clips": len(waves), "median_seconds": median_seconds},
        "latency_clip_seconds": ref,
        "hardware": {"machine": _platform.machine(), "processor": _platform.processor(), "torch_threads": torch.get_num_threads()},
        "device": measured_on.model_dump(),
        "exits": exits,
        "policies": policies,
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


def default_out(checkpoint: str) -> str:
    """``report/`` beside the checkpoint directory."""
    ckpt = str(checkpoint).rstrip("/")
    return join(ckpt.rsplit("/", 1)[0] if "/" in ckpt else ".", "report")


def exit_rows(report: dict) -> list[list]:
    return [
        [n, e["block"], e["uar"], e["wa"], e["macro_f1"], e["latency_ms_p50"], e["latency_ms_p95"]]
        for n, e in report["exits"].items()
    ]


EXIT_HEADERS = ["exit", "block", "UAR", "WA", "macro-F1", "p50 ms", "p95 ms"]


def _device_text(report: dict) -> str:
    if "device" in report:
        return DeviceInfo.model_validate(report["device"]).describe()
    return f"{report['hardware']['torch_threads']} threads"  # reports written before the device was recorded


def markdown_report(report: dict) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"checkpoint `{report['checkpoint']}`; dataset `{report['eval']['dataset']}`, folds {report['eval']['folds']}, "
        f"splits {report['eval']['splits']}, {report['eval']['clips']} clips; latency: batch 1, "
        f"{report['latency_clip_seconds']:g} s clip, {_device_text(report)}.",
        "",
        markdown_table(EXIT_HEADERS, exit_rows(report)),
        "",
    ]
    if "fusion" in report["policies"]:
        f = report["policies"]["fusion"]
        lines += [f"Fusion of {', '.join(f['exits'])} (largest logit margin): UAR {f['uar']:.3f}, "
                  f"~{f['mean_latency_ms']:.1f} ms per clip.", ""]
    for key in ("early_exit_margin", "early_exit_entropy"):
        rows = [[p["threshold"], p["uar"], p["mean_block"], p["mean_latency_ms"]] for p in report["policies"][key]]
        lines += [f"## {key.replace('_', ' ')}", "", markdown_table(["threshold", "UAR", "mean block", "mean ms"], rows), ""]
    labels = report["labels"]
    for name, e in report["exits"].items():
        rows = [[labels[i], *row] for i, row in enumerate(e["confusion"])]
        lines += [f"## confusion {name} (rows: truth)", "", markdown_table(["", *labels], rows), ""]
    return "\n".join(lines)


def plot(report: dict) -> bytes:
    """accuracy_latency.png: UAR against latency per exit, with the fusion and early-exit curves."""
    from emodistill.evaluate.plots import axes, png

    fig, ax = axes()
    xs = [e["latency_ms_p50"] for e in report["exits"].values()]
    ys = [e["uar"] for e in report["exits"].values()]
    ax.plot(xs, ys, "o-", color="tab:blue", label="single exit (cut model)")
    for name, x, y in zip(report["exits"], xs, ys):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for key, color in (("early_exit_margin", "tab:orange"), ("early_exit_entropy", "tab:green")):
        pts = sorted((p["mean_latency_ms"], p["uar"]) for p in report["policies"][key])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".--", color=color, alpha=0.8, label=key.replace("_", " "))
    if "fusion" in report["policies"]:
        f = report["policies"]["fusion"]
        ax.plot([f["mean_latency_ms"]], [f["uar"]], "s", color="tab:red", label="fusion (paper)")
    ax.axhline(1 / report["num_classes"], color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlabel(f"latency per clip, ms (batch 1, {report['latency_clip_seconds']:g} s clip)")
    ax.set_ylabel("UAR")
    ax.set_title("Accuracy against latency per exit")
    return png(fig, ax)


def _write_outputs(out: str, report: dict, profile: ExitProfile, s3: S3Options) -> None:
    fs, root = get_fs(out, s3)
    fs.makedirs(root, exist_ok=True)
    write_bytes_atomic(fs, join(root, "report.json"), json.dumps(report, indent=2).encode())
    write_bytes_atomic(fs, join(root, "report.md"), markdown_report(report).encode())
    write_profile(join(out, FILE_NAME), profile, s3)
    write_bytes_atomic(fs, join(root, "accuracy_latency.png"), plot(report))
