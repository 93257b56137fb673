"""emodistill: fast yet effective speech emotion recognition with self-distillation, on Ray.

``from emodistill import EmotionRecognizer`` loads the inference layer on first use, so
``import emodistill`` stays cheap (no torch).
"""

__version__ = "0.1.0"

_LAZY = {
    "EmotionRecognizer": "emodistill.inference.recognizer",
    "EmotionPrediction": "emodistill.inference.recognizer",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emodistill' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = ["EmotionPrediction", "EmotionRecognizer", "__version__"]
