"""Timelines of recordings: streaming decode, speech segments (silero-vad and energy),
windows of long speech, empty timelines, rows, CSV/JSON, the plot, bounded memory, the CLI."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import tiny_model, tone, write_audio

RATE = 16000
BIN = Path(sys.executable).with_name("emodistill")


def speech(emotion: str, index: int, speaker: int = 0) -> np.ndarray:
    from emodistill.data.synth import SynthConfig, synthesize_clip

    return synthesize_clip(SynthConfig(), speaker, emotion, index).astype(np.float32)


def call(parts: list) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate speech clips and pauses (seconds); return the audio and where speech is."""
    out, truth, pos = [], [], 0
    for p in parts:
        wave = np.zeros(int(p * RATE), dtype=np.float32) if isinstance(p, (int, float)) else p
        if not isinstance(p, (int, float)):
            truth.append((pos / RATE, (pos + wave.size) / RATE))
        out.append(wave)
        pos += wave.size
    return np.concatenate(out), truth


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Three utterances separated by pauses, at 44.1 kHz stereo (resampled while streaming)."""
    import soxr

    wave, truth = call([1.0, speech("angry", 0), 2.0, speech("sad", 1), 1.5, speech("happy", 2), 1.0])
    wave44 = soxr.resample(wave, RATE, 44100).astype(np.float32)
    path = write_audio(tmp_path_factory.mktemp("calls") / "call.wav", np.stack([wave44, wave44], axis=1), rate=44100)
    return path, truth


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    from emodistill import EmotionRecognizer
    from emodistill.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("tl-model") / "checkpoint"
    save_checkpoint(tiny_model(exits=(1, 2, 3), student_head="mean"), path, metadata={})
    return EmotionRecognizer.from_pretrained(str(path), exit="exit_2")


def test_stream_decodes_in_blocks_like_decode_does(tmp_path):
    from emodistill.data.audio import AudioLimits, decode, stream

    wave = tone(7.3, rate=44100, channels=2)
    path = write_audio(tmp_path / "a.flac", wave, rate=44100)
    limits = AudioLimits(max_seconds=60)
    blocks = list(stream(str(path), limits, block_seconds=1.0))
    assert len(blocks) >= 7 and max(b.size for b in blocks) <= 1.1 * RATE
    np.testing.assert_allclose(np.concatenate(blocks), decode(str(path), limits), atol=1e-6)


def test_stream_refuses_like_decode(tmp_path):
    from emodistill.data.audio import AudioError, AudioLimits, stream

    (tmp_path / "bad.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(AudioError) as err:
        list(stream(str(tmp_path / "bad.wav")))
    assert err.value.reason == "unreadable"
    path = write_audio(tmp_path / "long.wav", tone(3.0))
    with pytest.raises(AudioError) as err:
        list(stream(str(path), AudioLimits(max_seconds=2.0)))
    assert err.value.reason == "too_long"


@pytest.mark.parametrize("vad", ["silero", "energy"])
def test_detectors_find_the_utterances(recording, vad):
    from emodistill.data.audio import stream
    from emodistill.inference.segments import SegmentOptions, Segmenter
    from emodistill.inference.timeline import RECORDING_LIMITS

    path, truth = recording
    seg = Segmenter(SegmentOptions(vad=vad))
    total = 0
    for block in stream(str(path), RECORDING_LIMITS, block_seconds=0.7):
        seg.feed(block)
        total += block.size
    seg.finish(total)
    found = [(s / RATE, e / RATE) for s, e in seg.regions]
    assert len(found) == len(truth), found
    for (s, e), (ts, te) in zip(found, truth):
        assert abs(s - ts) < 0.35 and abs(e - te) < 0.35, (found, truth)


def test_long_speech_is_windowed_and_the_last_window_ends_with_it():
    from emodistill.inference.segments import SegmentOptions, Segmenter

    wave, truth = call([1.0, tone(9.0), 1.0])
    seg = Segmenter(SegmentOptions(vad="energy", window=3.0, hop=1.5, pad_ms=0))
    out = []
    for i in range(0, wave.size, 8000):
        out += seg.feed(wave[i: i + 8000])
    out += seg.finish(wave.size)
    spans = [((e - s) / RATE, s / RATE) for s, e in out]
    assert all(abs(d - 3.0) < 1e-6 for d, _ in spans)
    starts = [s for _, s in spans]
    assert np.allclose(np.diff(starts[:-1]), 1.5, atol=0.05)
    assert abs(out[-1][1] / RATE - 10.0) < 0.4  # the last window is aligned to the end of the speech


def test_fixed_windows_cover_the_recording_and_skip_silence():
    from emodistill.inference.segments import SegmentOptions, Segmenter

    wave, _ = call([tone(4.0), 6.0, tone(2.0)])
    seg = Segmenter(SegmentOptions(segment="fixed", window=2.0, hop=2.0))
    out = seg.feed(wave) + seg.finish(wave.size)
    got = [(s / RATE, e / RATE) for s, e in out]
    assert {(0.0, 2.0), (2.0, 4.0), (10.0, 12.0)} <= set(got)
    assert all(s < 4.0 + 0.04 or e > 10.0 - 0.04 for s, e in got), got  # the silence (frame resolution: 32 ms) is skipped


def test_timeline_rows_csv_json_and_plot(recognizer, recording, tmp_path):
    path, truth = recording
    tl = recognizer.timeline(str(path), vad="silero")
    assert tl.exit == "exit_2" and tl.labels == recognizer.labels
    assert abs(tl.duration - truth[-1][1] - 1.0) < 0.05 and len(tl.speech) == 3
    assert len(tl.segments) >= 3
    for s in tl.segments:
        assert 0 <= s.start < s.end <= tl.duration and s.exit == "exit_2"
        assert s.label == max(s.scores, key=s.scores.get) and abs(sum(s.scores.values()) - 1) < 1e-4
        assert any(a - 0.5 <= s.start and s.end <= b + 0.5 for a, b in truth)
    rows = list(csv.DictReader(io.StringIO(tl.csv_text())))
    assert len(rows) == len(tl.segments) and set(rows[0]) >= {"start", "end", "label", "exit", *[f"score_{l}" for l in tl.labels]}
    tl.write_json(tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["segments"][0]["label"] == tl.segments[0].label
    png = tl.plot(tmp_path / "t.png")
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kwargs", [{"vad": "silero"}, {"vad": "energy"}, {"segment": "fixed"}])
def test_a_recording_without_speech_gives_an_empty_timeline(recognizer, tmp_path, kwargs):
    path = write_audio(tmp_path / "silence.wav", np.zeros(5 * RATE, dtype=np.float32))
    tl = recognizer.timeline(str(path), **kwargs)
    assert tl.segments == [] and tl.speech == [] and tl.duration == 5.0
    tl.plot(tmp_path / "empty.png")


def test_bytes_and_corrupt_input(recognizer, recording):
    from emodistill.data.audio import AudioError

    path, _ = recording
    assert len(recognizer.timeline(Path(path).read_bytes(), vad="energy").segments) >= 3
    with pytest.raises(AudioError) as err:
        recognizer.timeline(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    assert err.value.reason == "unreadable"


def test_memory_stays_flat_with_the_length_of_the_recording(recognizer, tmp_path):
    """Peak memory of a 20 s and a 160 s recording (numpy allocations, traced): the audio
    held is a few windows, whatever the length."""
    from emodistill.inference.segments import SegmentOptions
    from emodistill.inference.timeline import iter_timeline

    unit, _ = call([tone(3.5), 1.5])
    peaks = {}
    for seconds in (20, 160):
        path = write_audio(tmp_path / f"r{seconds}.flac", np.tile(unit, seconds // 5), format="FLAC")
        list(iter_timeline(recognizer, str(path), SegmentOptions(vad="energy"), block_seconds=2.0))  # warm
        tracemalloc.start()
        n = sum(1 for _ in iter_timeline(recognizer, str(path), SegmentOptions(vad="energy"), block_seconds=2.0))
        peaks[seconds] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert n >= seconds // 5
    assert peaks[160] < 1.5 * peaks[20] + 2**20, peaks  # a whole 160 s decode alone would be 10 MB


def run(*args: str) -> subprocess.CompletedProcess:
    exe = [str(BIN)] if BIN.exists() else [shutil.which("emodistill") or "emodistill"]
    return subprocess.run([*exe, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_cli_timeline_json_plot_and_an_empty_recording(recognizer, recording, tmp_path):
    path, _ = recording
    silent = write_audio(tmp_path / "quiet.wav", np.zeros(3 * RATE, dtype=np.float32))
    ckpt = recognizer.opened.uri
    out = run("predict", ckpt, path, silent, "--timeline", "--json", "--exit", "exit_1", "--vad", "energy", "--plot", tmp_path / "plots")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and all(r["file"] == str(path) and r["exit"] == "exit_1" and r["end"] > r["start"] for r in rows)
    assert (tmp_path / "plots" / "call.png").exists() and (tmp_path / "plots" / "quiet.png").exists()
    assert "0 segments" in out.stderr
    out = run("predict", ckpt, path, "--timeline", "--csv", "--segment", "fixed", "--window", "2", "--hop", "1")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) >= 10 and {float(r["end"]) - float(r["start"]) for r in rows} == {2.0}
    bad = run("predict", ckpt, path, "--timeline", "--window", "1", "--hop", "2")
    assert bad.returncode == 2 and "hop" in bad.stderr
