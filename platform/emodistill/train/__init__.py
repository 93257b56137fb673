"""Training: the config, a Ray-free training step, and the Ray Train job around it."""
