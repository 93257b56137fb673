"""Inference without Ray: one exit's cut model behind a small runtime interface, the
Python API, batch prediction over files, and export (ONNX, int8, TorchScript, safetensors).

    weights      partial reads of a checkpoint's model.safetensors (only the cut model)
    graph        the cut model as a tensor function (what exporters trace)
    runtime      TorchRuntime (fp32 / bf16, cpu / cuda), OnnxRuntime (fp32 / int8), TorchScriptRuntime
    loading      a runtime from a checkpoint or an exported directory
    onnx         ONNX / TorchScript export, int8 quantization
    package      the exported directory's layout (config.json, preprocessor_config.json)
    model_card   its README.md
    verify       evaluation clips and the checks an export must pass
    timing       latency on a device; the deepest exit within a budget
    export       the export job
    recognizer   EmotionRecognizer
    files        predict over files, directories and globs
"""

from emodistill.inference.recognizer import EmotionPrediction, EmotionRecognizer

__all__ = ["EmotionPrediction", "EmotionRecognizer"]
