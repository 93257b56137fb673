"""Ray Tune sweeps of the self-distillation loss weights (`emodistill tune`).

`config` (what to search, how), `objectives` (pure functions: what a trial scores),
`sweep` (the Tuner over the same Ray Train trainer as `emodistill train`, and the outputs).
"""
