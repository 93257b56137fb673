"""Hostile requests, for the tests and the benchmark that show the API's limits hold
(``tests/serve/test_hostile.py``, ``bench/serve_hostile.py``).

Payloads: audio whose header lies (a FLAC declaring 655,350 Hz and 8 channels, a FLAC
of undeclared length, a WAV at 1 Hz), samples far outside [-1, 1] or not finite, a
multipart body of thousands of tiny parts. Clients: an upload that stalls and one that
closes before its Content-Length, over a raw socket (an HTTP library would not send
them).
"""

from __future__ import annotations

import io
import socket
import time
from dataclasses import dataclass

import numpy as np
import soundfile as sf


def _write(wave: np.ndarray, rate: int, **kw) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, **kw)
    return buf.getvalue()


def set_flac_total_samples(data: bytes, total: int) -> bytes:
    """``data`` (a FLAC file) with STREAMINFO's total sample count set to ``total``
    (0: "unknown", which a decoder must read to the end to find out)."""
    b = bytearray(data)
    if b[:4] != b"fLaC" or b[4] & 0x7F != 0:
        raise ValueError("not a FLAC file starting with STREAMINFO")
    at = 8 + 13  # STREAMINFO body starts at 8; total samples: 36 bits from the low nibble of byte 13
    b[at] = (b[at] & 0xF0) | ((total >> 32) & 0x0F)
    b[at + 1 : at + 5] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(b)


def lying_flac(seconds: float = 29.0, real_seconds: float = 0.05) -> bytes:
    """A FLAC declaring 655,350 Hz, 8 channels and ``seconds`` of audio (19M frames at
    29 s: ~600 MB once decoded to float32); it holds ``real_seconds`` of silence.
    ``real_seconds=seconds`` builds the full 165 KB file of issue 12 (slow to encode)."""
    rate, channels = 655350, 8
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, channels, format="FLAC", subtype="PCM_16") as fh:
        block = np.zeros((min(rate, int(rate * real_seconds)), channels), np.float32)
        left = int(rate * real_seconds)
        while left > 0:
            fh.write(block[: min(left, len(block))])
            left -= len(block)
    return set_flac_total_samples(buf.getvalue(), int(rate * seconds))


def unknown_length_flac(seconds: float = 60.0, rate: int = 48000, channels: int = 2, value: float = 0.1) -> bytes:
    """A valid FLAC of ``seconds`` of a constant (tiny once compressed) whose header does
    not declare its length: only decoding tells how long it is."""
    wave = np.full((int(rate * seconds), channels), value, np.float32)
    return set_flac_total_samples(_write(wave, rate, format="FLAC", subtype="PCM_16"), 0)


def wav_at(rate: int = 1, seconds: float = 30.0, channels: int = 1) -> bytes:
    """A WAV at ``rate`` Hz (1 Hz: 30 frames, 104 bytes, that resample to 30 s at 16 kHz)."""
    t = np.arange(max(1, int(rate * seconds)))
    wave = (0.5 * np.sin(t)).astype(np.float32)
    return _write(np.repeat(wave[:, None], channels, axis=1), rate, format="WAV", subtype="PCM_16")


def float_wav(value: float, seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A 32-bit float WAV of a tone scaled to ``value`` (1e35: far outside [-1, 1]; nan, inf)."""
    t = np.arange(int(rate * seconds)) / rate
    wave = np.sin(2 * np.pi * 220.0 * t).astype(np.float32)
    if np.isfinite(value):
        wave = wave * np.float32(value)
    else:
        wave[::100] = value
    return _write(wave, rate, format="WAV", subtype="FLOAT")


def multipart_flood(size: int = 4 * 1024 * 1024, boundary: str = "flood") -> tuple[str, bytes]:
    """(Content-Type, body): a form of ``size`` bytes made of tiny fields."""
    part = f"--{boundary}\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n".encode()
    body = part * (size // len(part)) + f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


# ---- clients an HTTP library would not be ---------------------------------------------------


@dataclass
class RawAnswer:
    status: int | None  # None: the server closed without an answer (or the client gave up)
    body: bytes
    seconds: float  # from the first byte sent to the answer (or the give-up)


def raw_post(
    host: str,
    port: int,
    path: str,
    body: bytes,
    declared: int | None = None,
    send_bytes: int | None = None,
    then: str = "wait",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> RawAnswer:
    """POST ``body`` over a raw socket, declaring ``declared`` bytes (default: the body's
    size) but sending only ``send_bytes`` of it; ``then`` is ``"wait"`` (stall with the
    connection open: a slow upload) or ``"close"`` (half-close: a truncated upload).
    Reads whatever answer comes within ``timeout``."""
    declared = len(body) if declared is None else declared
    sent = body[: len(body) if send_bytes is None else send_bytes]
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {declared}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {"Content-Type": "audio/wav"}).items()]
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + sent)
        if then == "close":
            sock.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
                if _complete(data):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    seconds = time.perf_counter() - start
    if not data.startswith(b"HTTP/1."):
        return RawAnswer(None, data, seconds)
    head_text, _, payload = data.partition(b"\r\n\r\n")
    return RawAnswer(int(head_text.split(b" ", 2)[1]), payload, seconds)


def _complete(data: bytes) -> bool:
    head, sep, payload = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(payload) >= int(value.strip())
    return False
