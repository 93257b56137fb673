"""The model card (``README.md``) of an exported exit, from what the export knows.

Sections: what the model is, labels, how to use it (Python API, CLI, onnxruntime alone),
input and output, training data (checkpoint metadata, plus the dataset's own counts when
it is reachable), accuracy and latency of every exit on the device the profile was
measured on (``exit_profile.json``), this export's verification and latency, intended use
and limits. Nothing is made up: a figure that was not measured says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emodistill.evaluate.tables import markdown_table
from emodistill.exit_profile import ExitProfile
from emodistill.inference.package import ExportInfo


def _training_data(metadata: Mapping[str, Any]) -> list[str]:
    dataset = metadata.get("dataset")
    if not dataset:
        return ["The checkpoint's metadata names no training dataset."]
    lines = [f"- dataset: `{dataset}`"]
    for key, text in (("train_folds", "training folds"), ("train_splits", "training splits"),
                      ("val_folds", "validation (model selection) folds"), ("val_splits", "validation splits"),
                      ("test_folds", "test folds"), ("test_splits", "test splits")):
        if metadata.get(key):
            lines.append(f"- {text}: {metadata[key]}")
    if metadata.get("epoch") is not None:
        lines.append(f"- checkpoint of epoch {metadata['epoch']}")
    train = metadata.get("train_config") or {}
    model = train.get("model") or {}
    backbone = model.get("backbone") or {}
    if backbone:
        source = backbone.get("pretrained") or f"random init `{backbone.get('arch')}` ({backbone.get('family', 'wav2vec2')})"
        lines.append(f"- backbone: {source}; student heads `{model.get('student_head')}`, teacher head `{model.get('teacher_head')}`")
    loss = train.get("loss") or {}
    if loss.get("preset"):
        lines.append(f"- loss: preset `{loss['preset']}` (self-distillation from the deepest exit)")
    try:
        from emodistill.data.schema import read_info

        info = read_info(str(dataset))
        speakers = len(info.counts_by_speaker)
        lines.append(f"- the dataset: {info.num_rows} clips, {info.total_seconds / 3600:.2f} h, {speakers} speakers, "
                     f"corpus format `{info.format}`, folds by {info.fold_source}")
        per_label = {label: sum(c.get(label, 0) for c in info.counts_by_fold.values() or info.counts_by_split.values())
                     for label in info.labels}
        lines.append("- clips per label: " + ", ".join(f"{k} {v}" for k, v in per_label.items()))
    except Exception:
        lines.append("- (the dataset was not reachable at export time: counts not shown)")
    return lines


def _exit_table(profile: ExitProfile | None, exit: str, seconds: float = 3.0) -> list[str]:
    if profile is None:
        return ["No `exit_profile.json` was found beside the checkpoint: run `emodistill evaluate CHECKPOINT DATASET` "
                "to measure every exit's UAR and latency."]
    d = profile.device
    rows = []
    for name, entry in profile.exits.items():
        lat = entry.latency_at(seconds, "p50"), entry.latency_at(seconds, "p95")
        rows.append([f"**{name}**" if name == exit else name, entry.block,
                     "-" if entry.uar is None else f"{entry.uar:.3f}", f"{lat[0]:.1f}", f"{lat[1]:.1f}"])
    where = f"{d.kind} `{d.name or 'unknown'}`" + (f", {d.threads} threads" if d.threads else "") + (f", torch {d.torch}" if d.torch else "")
    return [
        f"Held-out UAR (speaker-independent) and batch-1 latency of each exit's cut model (torch fp32) on a "
        f"{seconds:g} s clip, measured by `emodistill evaluate` on {where}. This export is the bold row.",
        "",
        markdown_table(["exit", "block", "UAR", "p50 ms", "p95 ms"], rows),
    ]


def model_card(info: ExportInfo, metadata: Mapping[str, Any], profile: ExitProfile | None, name: str) -> str:
    labels = info.labels
    precision = {"fp32": "float32", "bf16": "bfloat16 weights", "int8": "int8"}[info.precision]
    if info.exporter and "int8 (" in info.exporter:
        precision = "int8: " + info.exporter.split("int8 (", 1)[1].rstrip(")")
    front = [
        "---",
        f"library_name: {'onnx' if info.model_format == 'onnx' else 'emodistill'}",
        "pipeline_tag: audio-classification",
        "tags:",
        *[f"- {t}" for t in ["speech-emotion-recognition", "audio-classification", "early-exit", "self-distillation",
                             "emodistill", info.model_format, info.precision]],
    ]
    pretrained = ((metadata.get("train_config") or {}).get("model") or {}).get("backbone", {}).get("pretrained")
    if pretrained and "://" not in str(pretrained) and not str(pretrained).startswith(("/", ".")):
        front.append(f"base_model: {pretrained}")  # a hub id
    front.append("---")
    mask_text = " and `attention_mask` (batch, samples) int64, 1 for real samples" if "attention_mask" in info.inputs else ""
    lines = [
        *front,
        f"# {name}: speech emotion recognition, {info.exit}",
        "",
        f"The model cut after transformer block {info.block} of {info.spec.source_num_blocks} of an emodistill "
        f"checkpoint fine-tuned with self-distillation (Ren et al., *Fast Yet Effective Speech Emotion Recognition "
        f"with Self-distillation*, ICASSP 2023): the conv feature encoder, blocks 1..{info.block} and the "
        f"`{info.spec.heads[info.exit]}` head of `{info.exit}`. Nothing deeper is in this directory, so it computes "
        f"only what this exit needs. Format: `{info.model_file}` ({info.model_format}, {precision}).",
        "",
        "## Labels",
        "",
        markdown_table(["id", "label"], [[i, label] for i, label in enumerate(labels)]),
        "",
        "## Use",
        "",
        "```python",
        "from emodistill import EmotionRecognizer",
        "",
        'recognizer = EmotionRecognizer.from_pretrained("path/to/this/directory")',
        'result = recognizer.predict("clip.wav")  # any soundfile format, rate and channel count',
        "print(result.label, result.scores, result.latency_ms)",
        "```",
        "",
        "```",
        "emodistill predict path/to/this/directory clips/ --json",
        "```",
    ]
    if info.model_format == "onnx":
        lines += [
            "",
            "With onnxruntime alone (mono float32 at 16 kHz, no normalisation needed: the graph does it):",
            "",
            "```python",
            "import numpy as np, onnxruntime as ort, soundfile as sf",
            "",
            'session = ort.InferenceSession("model.onnx")',
            'wave, rate = sf.read("clip_16k_mono.wav", dtype="float32")',
            "feeds = {\"input_values\": wave[None, :]}" + (
                "\nfeeds[\"attention_mask\"] = np.ones_like(feeds[\"input_values\"], dtype=np.int64)" if mask_text else ""),
            'logits = session.run(["logits"], feeds)[0]',
            "```",
        ]
    lines += [
        "",
        "## Input and output",
        "",
        f"- input: `input_values` (batch, samples) float32, mono audio at {info.sample_rate} Hz{mask_text}. "
        + ("Each clip is normalised inside the model (zero mean, unit variance over its samples), so "
           "`preprocessor_config.json` has `do_normalize: false`."
           if info.spec.normalize_waveform else
           "The model reads each clip's level as it is (trained with `normalize_waveform: false`: loudness is one of "
           "its cues), so feed samples in -1..1 at the level they were recorded, as in training; do not normalise "
           "them (`preprocessor_config.json` has `do_normalize: false`)."),
        "- batches: " + ("clips of different lengths can share a batch (padded, with the mask)." if mask_text else
                         "clips in one batch must have the same length (the GroupNorm conv encoder would see "
                         "padding); the emodistill runtimes group clips by length."),
        f"- output: `logits` (batch, {len(labels)}) float32 in the label order above; softmax gives the scores.",
        "",
        "## Training data",
        "",
        *_training_data(metadata),
        "",
        "## Accuracy and latency of every exit",
        "",
        *_exit_table(profile, info.exit),
        "",
        "## This export",
        "",
    ]
    verification = info.verification or {}
    if verification:
        lines.append(f"Checked at export on {verification.get('clips')}:")
        lines.append("")
        lines += [f"- {'passed' if c['passed'] else 'FAILED'}: {c['check']}" for c in verification.get("checks", [])]
    else:
        lines.append("Not verified at export.")
    latency = info.latency or {}
    if latency:
        d = latency.get("device", {})
        lines += [
            "",
            f"Latency of this model as exported ({latency.get('runtime')}, batch 1, {latency.get('seconds', 3):g} s clip) "
            f"on {d.get('kind')} `{d.get('name')}`" + (f", {d.get('threads')} threads" if d.get("threads") else "")
            + f": p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms"
            + (f"; torch fp32 of the same exit: p50 {latency['torch_fp32_p50']:.1f} ms." if latency.get("torch_fp32_p50") else "."),
        ]
    lines += [
        "",
        "## Intended use and limits",
        "",
        "- Intended for: classifying the emotion category of short speech clips (about 1-30 s) into the labels above, "
        "where a shallower exit's lower latency is worth its accuracy (see the table).",
        "- Acted emotion corpora differ from spontaneous speech: expect lower accuracy on other speakers, languages, "
        "microphones and noise than the held-out figures, which come from the training corpus' own unseen speakers.",
        "- Scores are softmax outputs, not calibrated probabilities; a clip may carry no emotion in these labels.",
        "- Not for decisions about people (hiring, health, policing, surveillance) or for inferring anything beyond "
        "the expressed emotion category of a clip.",
        "- Silent, corrupt, very short (< 0.25 s) and very long (> 30 s) audio is refused by `emodistill predict` "
        "and `EmotionRecognizer`, with the reason.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["model_card"]
