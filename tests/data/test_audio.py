"""The one decode path: formats, channels, rates, and clear reasons for bad audio."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from conftest import tone
from emodistill.data.audio import (
    AudioError,
    AudioLimits,
    check,
    check_header,
    decode,
    decode_clip,
    decode_flac,
    encode_flac,
    read_header,
)


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


# ---- headers that lie, and the block decoder's cap ---------------------------------------


def test_header_limits_refuse_before_decoding():
    from emodistill.serve import hostile

    cases = {
        "lying FLAC, 655,350 Hz x 8 channels": (hostile.lying_flac(), "sample_rate"),
        "WAV at 1 Hz (30 frames that would resample to 30 s)": (hostile.wav_at(1), "sample_rate"),
        "WAV at 4 kHz": (hostile.wav_at(4000, seconds=1.0), "sample_rate"),
        "9 channels": (hostile.wav_at(16000, seconds=0.5, channels=9), "channels"),
        "declares 31 s": (_bytes(tone(31.0, rate=8000), 8000, format="WAV"), "too_long"),
    }
    for name, (data, reason) in cases.items():
        with pytest.raises(AudioError) as err:
            decode(data)
        assert err.value.reason == reason, name
    # frames x channels x 4 bytes over the cap, declared in the header
    with pytest.raises(AudioError) as err:
        decode(hostile.wav_at(48000, seconds=1.0, channels=8), AudioLimits(max_decoded_bytes=1 << 20))
    assert err.value.reason == "too_large" and "1 MiB limit" in str(err.value)
    header = read_header(hostile.lying_flac())
    assert (header.sample_rate, header.channels, header.format) == (655350, 8, "FLAC")
    check_header(read_header(hostile.wav_at(8000, 1.0)))  # the edges are accepted
    check_header(read_header(hostile.wav_at(192000, 0.1)))


def test_a_stream_of_undeclared_length_is_cut_at_the_cap():
    """A FLAC whose header does not say how long it is: decoding stops at the duration or
    byte cap, however long the stream, and never holds more than the cap."""
    import tracemalloc

    from emodistill.serve import hostile

    long = hostile.unknown_length_flac(seconds=12.0, rate=48000, channels=2)
    assert read_header(long).frames is None and len(long) < 50_000
    with pytest.raises(AudioError) as err:
        decode(long, AudioLimits(max_seconds=2.0))
    assert err.value.reason == "too_long"
    wide = hostile.unknown_length_flac(seconds=4.0, rate=48000, channels=8)
    cap = 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(AudioError) as err:
            decode(wide, AudioLimits(max_decoded_bytes=cap))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.reason == "too_large"
    assert peak < cap, f"decoding allocated {peak} bytes against a {cap} byte cap"
    # within the limits, an undeclared length decodes to exactly what a declared one does
    short = hostile.unknown_length_flac(seconds=1.5, rate=22050, channels=2)
    declared = hostile.set_flac_total_samples(short, int(1.5 * 22050))
    np.testing.assert_array_equal(decode(short), decode(declared))
    assert abs(decode(short).size - 24000) <= 2


def test_samples_outside_full_scale_are_clipped_and_non_finite_ones_refused():
    from emodistill.serve import hostile

    wave = decode(hostile.float_wav(1e35))  # like training, which stores clipped 16-bit FLAC
    assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0 and np.abs(wave).max() > 0.99
    stereo_huge = _bytes(np.full((16000, 8), 3e38, np.float32), 16000, format="WAV", subtype="FLOAT")
    assert np.isfinite(decode(stereo_huge)).all()  # averaging 8 channels of 3e38 does not overflow
    for bad in [float("nan"), float("inf"), float("-inf")]:
        with pytest.raises(AudioError) as err:
            decode(hostile.float_wav(bad))
        assert err.value.reason == "non_finite"


def test_decode_clip_is_decode_then_check():
    """What serving (and ingest) call: the training decoder, then the usability checks."""
    out = decode_clip(_bytes(tone(1.0, rate=44100, channels=2), 44100, format="WAV"))
    assert out.dtype == np.float32 and out.ndim == 1 and abs(out.size - 16000) <= 1
    with pytest.raises(AudioError) as err:
        decode_clip(b"this is not audio")
    assert err.value.reason == "unreadable"
    with pytest.raises(AudioError) as err:
        decode_clip(b"")
    assert err.value.reason == "empty"
    with pytest.raises(AudioError) as err:
        decode_clip(_bytes(tone(0.1), 16000, format="WAV"))
    assert err.value.reason == "too_short"
    with pytest.raises(AudioError) as err:
        decode_clip(_bytes(np.zeros(16000, np.float32), 16000, format="WAV"))
    assert err.value.reason == "silent"
    served = decode_clip(_bytes(np.zeros(16000, np.float32), 16000, format="WAV"), AudioLimits(silence_peak=0.0))
    assert served.size == 16000
