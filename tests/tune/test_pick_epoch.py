"""Which epoch of a trial a sweep reports and exports (no Ray)."""

from __future__ import annotations

import pytest

from emodistill.tune.sweep import checkpoint_exists, pick_epoch


def test_tied_best_epochs_export_the_checkpoint_ray_kept(tmp_path):
    """Epochs 0 and 1 tie; with keep_checkpoints: 1 Ray kept epoch 1's checkpoint and
    deleted epoch 0's, which the sweep used to export."""
    kept = tmp_path / "checkpoint_1"
    kept.mkdir()
    (kept / "config.json").write_text("{}")
    later = tmp_path / "checkpoint_2"
    later.mkdir()
    (later / "config.json").write_text("{}")
    records = [
        {"epoch": 0, "uar_latency_auc": 0.6, "checkpoint_path": str(tmp_path / "checkpoint_0")},  # deleted
        {"epoch": 1, "uar_latency_auc": 0.6, "checkpoint_path": str(kept)},
        {"epoch": 2, "uar_latency_auc": 0.5, "checkpoint_path": str(later)},
    ]
    best = pick_epoch(records, "uar_latency_auc")
    assert best["epoch"] == 1 and checkpoint_exists(best["checkpoint_path"])
    gone = [dict(r, checkpoint_path=str(tmp_path / "nope")) for r in records]
    assert pick_epoch(gone, "uar_latency_auc")["checkpoint_path"] is None, "metrics stand; nothing to export"
    with pytest.raises(ValueError, match="no epoch reported"):
        pick_epoch([{"epoch": 0, "uar_latency_auc": float("nan")}], "uar_latency_auc")
