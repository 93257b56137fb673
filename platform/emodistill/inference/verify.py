"""Does an exported model answer like the checkpoint? Clips to check on, and the checks.

Clips (:func:`evaluation_clips`): the checkpoint's held-out clips (its test or validation
folds/splits, as its metadata names them) when its dataset is reachable, else generated
speech (``data.synth``: voiced clips of several speakers and emotions, no labels that
match the model's). int8 calibration (:func:`calibration_clips`) uses the checkpoint's
*training* clips, or generated clips of another seed, never the clips it is checked on.

Checks (:func:`check_export`):
    fp32 graph      max |logits - torch fp32 logits| <= 1e-4 on every clip
    int8 / bf16     top-1 agreement with fp32 >= 98 %, and UAR within 1 point of fp32's
                    (UAR only where the clips have labels)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from emodistill.evaluate.metrics import classification_metrics

FP32_TOLERANCE = 1e-4
MIN_AGREEMENT = 0.98
MAX_UAR_DROP = 0.01


@dataclass
class Clips:
    waves: list[np.ndarray]
    labels: np.ndarray | None  # label ids in the model's label order, or None (generated clips)
    source: str  # "held-out" or "generated"
    description: str  # one line a person reads: where the clips come from


def _metadata_selection(metadata: Mapping[str, Any], held_out: bool) -> tuple[list[int] | None, list[str] | None]:
    prefixes = ("test", "val") if held_out else ("train",)
    for prefix in prefixes:
        if metadata.get(f"{prefix}_splits"):
            return None, list(metadata[f"{prefix}_splits"])
        if metadata.get(f"{prefix}_folds"):
            return [int(f) for f in metadata[f"{prefix}_folds"]], None
    return None, None


def _spread(n: int, limit: int) -> np.ndarray:
    """``limit`` indices spread evenly over ``range(n)`` (all of them when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def _dataset_clips(
    metadata: Mapping[str, Any], labels: Sequence[str], held_out: bool, limit: int, max_seconds: float
) -> Clips:
    from emodistill.data.batching import BatchOptions
    from emodistill.data.rows import load_arrays
    from emodistill.data.schema import read_info

    dataset = metadata.get("dataset")
    if not dataset:
        raise LookupError("the checkpoint names no dataset")
    info = read_info(str(dataset))
    if list(info.labels) != list(labels):
        raise LookupError(f"{dataset} has labels {info.labels}, the model {list(labels)}")
    folds, splits = _metadata_selection(metadata, held_out)
    if not held_out and folds is None and splits is None:
        held_folds, _ = _metadata_selection(metadata, True)
        folds = [f for f in info.folds if f not in set(held_folds or [])] or None
    if folds is None and splits is None:
        raise LookupError("the checkpoint records no " + ("held-out" if held_out else "training") + " folds or splits")
    arrays = load_arrays(str(dataset), folds=folds, splits=splits, options=BatchOptions(mode="full"))
    if len(arrays.get("waveform", [])) == 0:
        raise LookupError(f"no clips in folds={folds} splits={splits} of {dataset}")
    pick = _spread(len(arrays["waveform"]), limit)
    cap = int(max_seconds * 16000)
    waves = [np.asarray(arrays["waveform"][i], dtype=np.float32)[:cap] for i in pick]
    ids = np.asarray(arrays["label_id"], dtype=np.int64)[pick]
    where = f"folds {folds}" if folds is not None else f"splits {splits}"
    kind = "held-out" if held_out else "training"
    return Clips(waves, ids, "held-out" if held_out else "training", f"{len(waves)} {kind} clips of {dataset} ({where})")


def generated_clips(count: int = 48, seed: int = 1234) -> Clips:
    """Synthetic voiced speech of several speakers and emotions, 1.5-3.5 s."""
    from emodistill.data.synth import SynthConfig, synthesize_clip

    cfg = SynthConfig(seed=seed)
    speakers = max(2, min(cfg.speakers, count // len(cfg.emotions)))
    jobs = [(s, e, i) for i in range(count) for s in range(speakers) for e in cfg.emotions][:count]
    waves = [synthesize_clip(cfg, s, e, i) for s, e, i in jobs]
    return Clips(waves, None, "generated", f"{len(waves)} generated speech clips (synth seed {seed}; no labels, so no UAR)")


def evaluation_clips(metadata: Mapping[str, Any], labels: Sequence[str], limit: int = 256) -> Clips:
    """The checkpoint's held-out clips (at most ``limit``), else generated clips; the
    description says which, and why when the dataset was not used."""
    try:
        return _dataset_clips(metadata, labels, held_out=True, limit=limit, max_seconds=30.0)
    except Exception as err:  # unreachable dataset, other labels, no selection: fall back, saying why
        clips = generated_clips(min(limit, 48))
        clips.description += f"; the checkpoint's held-out clips were not used: {_reason(err)}"
        return clips


def calibration_clips(metadata: Mapping[str, Any], labels: Sequence[str], limit: int = 32) -> Clips:
    """Clips to calibrate int8 ranges on: the checkpoint's training clips, else generated
    clips of a seed other than the evaluation one."""
    try:
        return _dataset_clips(metadata, labels, held_out=False, limit=limit, max_seconds=10.0)
    except Exception:
        return generated_clips(limit, seed=4321)


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]


@dataclass
class Comparison:
    """How a candidate's logits compare with the reference's on the same clips."""

    clips: int
    max_abs_diff: float
    top1_agreement: float
    uar_reference: float | None = None
    uar_candidate: float | None = None

    @property
    def uar_drop(self) -> float | None:
        if self.uar_reference is None or self.uar_candidate is None:
            return None
        return self.uar_reference - self.uar_candidate

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uar_drop": self.uar_drop}


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> Comparison:
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    out = Comparison(
        clips=int(reference.shape[0]),
        max_abs_diff=float(np.abs(reference - candidate).max()),
        top1_agreement=float((reference.argmax(1) == candidate.argmax(1)).mean()),
    )
    if labels is not None:
        classes = reference.shape[1]
        out.uar_reference = classification_metrics(labels, reference.argmax(1), classes)["uar"]
        out.uar_candidate = classification_metrics(labels, candidate.argmax(1), classes)["uar"]
    return out


@dataclass
class Verification:
    """What an export checked and found; ``passed`` is all of ``checks``."""

    clips: str  # description of the clips
    source: str  # held-out | generated
    precision: str
    fp32: Comparison | None = None  # the fp32 graph against torch fp32
    quantized: Comparison | None = None  # the int8/bf16 model against fp32
    checks: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)

    def lines(self) -> list[str]:
        """What the export prints: one line per check."""
        out = [f"verification on {self.clips}"]
        for text, ok in self.checks:
            out.append(f"  {'ok  ' if ok else 'FAIL'} {text}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "clips": self.clips,
            "source": self.source,
            "precision": self.precision,
            "fp32": self.fp32.as_dict() if self.fp32 else None,
            "quantized": self.quantized.as_dict() if self.quantized else None,
            "checks": [{"check": text, "passed": ok} for text, ok in self.checks],
            "passed": self.passed,
        }


def check_export(
    clips: Clips,
    torch_fp32: np.ndarray,
    graph_fp32: np.ndarray | None,
    quantized: np.ndarray | None,
    precision: str,
) -> Verification:
    """Checks of an export's logits on ``clips``: ``torch_fp32`` from the checkpoint's cut
    model, ``graph_fp32`` from the exported fp32 graph (or reloaded fp32 weights),
    ``quantized`` from the int8/bf16 model."""
    result = Verification(clips=clips.description, source=clips.source, precision=precision)
    if graph_fp32 is not None:
        result.fp32 = c = compare(torch_fp32, graph_fp32, clips.labels)
        result.checks.append((f"fp32 logits within {FP32_TOLERANCE:g} of torch: max |diff| = {c.max_abs_diff:.2e}",
                              c.max_abs_diff <= FP32_TOLERANCE))
    if quantized is not None:
        reference = graph_fp32 if graph_fp32 is not None else torch_fp32
        result.quantized = q = compare(reference, quantized, clips.labels)
        result.checks.append((f"{precision} top-1 agreement with fp32 = {q.top1_agreement:.1%} (>= {MIN_AGREEMENT:.0%}); "
                              f"max |diff| = {q.max_abs_diff:.3g}", q.top1_agreement >= MIN_AGREEMENT))
        if q.uar_drop is not None:
            result.checks.append((f"{precision} UAR {q.uar_candidate:.3f} vs fp32 {q.uar_reference:.3f} "
                                  f"(within {MAX_UAR_DROP * 100:.0f} point)", abs(q.uar_drop) <= MAX_UAR_DROP + 1e-12))
        else:
            result.checks.append((f"{precision} UAR: not measured (the clips have no labels)", True))
    return result


__all__ = [
    "Clips",
    "Comparison",
    "Verification",
    "calibration_clips",
    "check_export",
    "compare",
    "evaluation_clips",
    "generated_clips",
]
