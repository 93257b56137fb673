"""Evaluation: metrics per exit, latency of cut models, reports."""
