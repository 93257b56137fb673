"""The one decode path: formats, channels, rates, and clear reasons for bad audio."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from conftest import tone
from emodistill.data.audio import AudioError, AudioLimits, check, decode, decode_flac, encode_flac


def _bytes(wave, rate, **kw):
    buf = io.BytesIO()
    sf.write(buf, wave, rate, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [{"format": "WAV"}, {"format": "FLAC"}, {"format": "OGG", "subtype": "VORBIS"}])
def test_formats_channels_and_rates(fmt):
    stereo = tone(1.0, rate=44100, channels=2)
    wave = decode(_bytes(stereo, 44100, **fmt))
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - 16000) <= 2


def test_bad_bytes_have_reasons():
    with pytest.raises(AudioError) as err:
        decode(b"definitely not audio")
    assert err.value.reason == "unreadable" and "0x" not in str(err.value)
    with pytest.raises(AudioError) as err:
        decode(_bytes(np.zeros((0, 1), np.float32), 16000, format="WAV"))
    assert err.value.reason == "empty"
    with pytest.raises(AudioError) as err:
        decode(_bytes(tone(3.0), 16000, format="WAV"), AudioLimits(max_seconds=2.0))
    assert err.value.reason == "too_long" and "2 s limit" in str(err.value)


@pytest.mark.parametrize(
    "wave, reason",
    [
        (np.zeros(16000, np.float32), "silent"),
        (np.full(16000, np.nan, np.float32), "non_finite"),
        (tone(0.1), "too_short"),
        (tone(2.5), "too_long"),
        (np.zeros(0, np.float32), "empty"),
    ],
)
def test_check_reasons(wave, reason):
    with pytest.raises(AudioError) as err:
        check(wave, AudioLimits(min_seconds=0.25, max_seconds=2.0))
    assert err.value.reason == reason


def test_flac_round_trip_is_deterministic_and_close():
    wave = tone(1.0)
    a, b = encode_flac(wave), encode_flac(wave)
    assert a == b
    np.testing.assert_allclose(decode_flac(a), wave, atol=2 / 32768)
