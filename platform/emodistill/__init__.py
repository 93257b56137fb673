"""emodistill: fast yet effective speech emotion recognition with self-distillation, on Ray."""

__version__ = "0.1.0"
