"""Training-time augmentation: pure, seeded, finite, and padding stays padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from conftest import tone
from emodistill.data.augment import (
    AugmentConfig,
    active_rms,
    add_noise,
    augment_batch,
    augment_clip,
    colored_noise,
    reverb,
    speed,
    time_mask,
)
from emodistill.data.batching import pad_batch

EVERYTHING = AugmentConfig(
    speed=(0.9, 1.1), noise_prob=1.0, noise_snr_db=(5, 20), reverb_prob=1.0, gain_db=3.0, time_masks=2
)


def test_speed_changes_length_and_pitch():
    wave = tone(1.0, freq=200.0)
    fast, slow = speed(wave, 1.25), speed(wave, 0.8)
    assert fast.dtype == np.float32 and abs(fast.size - 12800) <= 2 and abs(slow.size - 20000) <= 2

    def peak_hz(x):
        spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        return np.fft.rfftfreq(x.size, 1 / 16000)[np.argmax(spectrum)]

    assert peak_hz(fast) == pytest.approx(250.0, abs=3) and peak_hz(slow) == pytest.approx(160.0, abs=3)
    np.testing.assert_array_equal(speed(wave, 1.0), wave)


def test_noise_reaches_the_asked_snr_and_each_color_its_spectrum():
    rng = np.random.default_rng(0)
    wave = tone(2.0)
    noisy = add_noise(wave, 10.0, rng, "pink")
    snr = 20 * np.log10(active_rms(wave) / np.sqrt(np.mean((noisy - wave) ** 2)))
    assert snr == pytest.approx(10.0, abs=0.5)
    for color, slope in [("white", 0.0), ("pink", -1.0), ("brown", -2.0)]:
        x = colored_noise(1 << 15, color, rng)
        assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0, rel=1e-3)
        power = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(x.size)
        band = (f > 0.001) & (f < 0.4)
        fitted = np.polyfit(np.log(f[band]), np.log(power[band] + 1e-20), 1)[0]
        assert fitted == pytest.approx(slope, abs=0.25), color
    silent = np.zeros(1000, np.float32)
    np.testing.assert_array_equal(add_noise(silent, 0.0, rng), silent)


def test_time_mask_zeroes_short_spans_only():
    wave = np.ones(16000, np.float32)
    out = time_mask(wave, 3, 800, np.random.default_rng(1))
    zeroed = int((out == 0).sum())
    assert 0 < zeroed <= 3 * 800 and out.size == wave.size and (wave == 1).all(), "input untouched"


def test_reverb_keeps_length_and_level_and_smears_in_time():
    rng = np.random.default_rng(2)
    click = np.zeros(16000, np.float32)
    click[100] = 1.0
    wet = reverb(click, 0.5, rng)
    assert wet.size == click.size and np.isfinite(wet).all()
    assert np.sqrt(np.mean(wet**2)) == pytest.approx(np.sqrt(np.mean(click**2)), rel=1e-3)
    assert np.abs(wet[2000:]).max() > 0, "a tail follows the click"


def test_a_seed_gives_the_same_augmentation_and_another_seed_another():
    wave = tone(1.5)
    a = augment_clip(wave, EVERYTHING, np.random.default_rng(7))
    b = augment_clip(wave, EVERYTHING, np.random.default_rng(7))
    c = augment_clip(wave, EVERYTHING, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert a.size != c.size or not np.array_equal(a, c)
    assert a.dtype == np.float32 and np.isfinite(a).all() and np.isfinite(c).all()


def test_batch_padding_stays_zero_and_the_mask_follows_new_lengths():
    clips = [tone(1.0, seed=1), tone(0.4, seed=2), tone(0.7, seed=3)]
    x, mask = pad_batch(clips)
    before = x.clone()
    cfg = EVERYTHING.model_copy(update={"speed": (0.8, 0.8)})  # every clip 1.25x longer
    y, new_mask = augment_batch(x, mask, cfg, np.random.default_rng(0))
    assert torch.equal(x, before), "the input batch is not modified"
    lengths = new_mask.sum(dim=1).tolist()
    assert lengths == [pytest.approx(c.size / 0.8, abs=2) for c in clips]
    assert y.shape == new_mask.shape and y.shape[1] == max(lengths)
    assert torch.isfinite(y).all()
    for i, n in enumerate(lengths):
        assert torch.all(new_mask[i, :n] == 1) and torch.all(new_mask[i, n:] == 0)
        assert torch.all(y[i, n:] == 0), "padding stays zero"
    # each row is its clip augmented alone: padding never leaks into a clip
    rng = np.random.default_rng(0)
    for i, clip in enumerate(clips):
        np.testing.assert_array_equal(y[i, : lengths[i]].numpy(), augment_clip(clip, cfg, rng))


def test_off_by_default_and_bad_ranges_rejected():
    assert not AugmentConfig().active and EVERYTHING.active
    wave = tone(0.5)
    np.testing.assert_array_equal(augment_clip(wave, AugmentConfig(), np.random.default_rng(0)), wave)
    with pytest.raises(ValidationError, match="above the high end"):
        AugmentConfig(speed=(1.1, 0.9))
    with pytest.raises(ValidationError, match="0.5..2.0"):
        AugmentConfig(speed=(0.2, 1.0))
    with pytest.raises(ValidationError, match="noise_colors"):
        AugmentConfig(noise_colors=["purple"])
    with pytest.raises(ValidationError, match="positive"):
        AugmentConfig(reverb_rt60=(0.0, 0.5))
    with pytest.raises(ValidationError, match="0.7..1.4"):
        AugmentConfig(vtlp=(0.5, 1.0))
    assert not AugmentConfig(vtlp=(0.9, 1.1)).active, "VTLP is the front-end's, not a waveform augmentation"
