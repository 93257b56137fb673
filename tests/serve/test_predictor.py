"""The exit predictor without Ray: the cut model only, batches, cascade state, decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from conftest import tone
from emodistill.checkpoint import load_checkpoint
from emodistill.serve.predictor import ExitPredictor


def wav_bytes(wave, rate=16000, fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt)
    return buf.getvalue()


def test_holds_only_its_cut_model(served_checkpoint):
    full = load_checkpoint(served_checkpoint).model
    p1, p4 = ExitPredictor(served_checkpoint, "exit_1"), ExitPredictor(served_checkpoint, "exit_4")
    assert len(p1.model.backbone.encoder.layers) == 1 and list(p1.model.heads) == ["exit_1"]
    assert p1.num_parameters < p4.num_parameters < sum(p.numel() for p in full.parameters())
    assert p1.describe()["version"] == p4.describe()["version"] == load_checkpoint(served_checkpoint).version


def test_padded_batch_equals_clips_one_by_one(served_checkpoint):
    p = ExitPredictor(served_checkpoint, "exit_2")
    clips = [tone(s, freq=f, seed=i).astype(np.float32) for i, (s, f) in enumerate([(1.0, 200), (0.55, 300), (1.7, 150)])]
    batched = p.predict(clips)
    for clip, b in zip(clips, batched):
        alone = p.predict([clip])[0]
        np.testing.assert_allclose(b.probabilities, alone.probabilities, atol=1e-5)
        assert b.batch_size == 3 and alone.batch_size == 1
        assert abs(sum(b.probabilities) - 1) < 1e-5 and b.exit == "exit_2" and b.block == 2


def test_deeper_exit_resumes_from_the_shallow_state(served_checkpoint):
    """What the cascade does: exit_4 continues from exit_1's block output (its own frames
    only, clips of different lengths) and answers as if it had run from the waveform."""
    p1, p4 = ExitPredictor(served_checkpoint, "exit_1"), ExitPredictor(served_checkpoint, "exit_4")
    clips = [tone(1.3, freq=220, seed=1).astype(np.float32), tone(0.7, freq=330, seed=2).astype(np.float32)]
    shallow = p1.predict(clips, return_state=True)
    assert [s.state.hidden.shape[0] for s in shallow] == [64, 34]  # 20 ms frames of each clip
    resumed = p4.resume([s.state for s in shallow])
    direct = p4.predict(clips)
    for r, d in zip(resumed, direct):
        np.testing.assert_allclose(r.probabilities, d.probabilities, atol=1e-5)
    with pytest.raises(ValueError, match="one block"):
        p4.resume([shallow[0].state, p1.predict(clips[:1], return_state=True)[0].state.__class__(2, shallow[0].state.hidden)])


