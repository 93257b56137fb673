"""A log-mel front-end: a cheap stand-in for the conv feature encoder of a random-init backbone.

wav2vec 2.0's conv feature encoder learns a filterbank from raw samples; pretrained, it is
worth its cost, but trained from scratch on a few hundred clips it is both the slowest part
of a small model (its first layers run at thousands of frames per second) and a weak
starting point. This front-end computes a fixed log-mel spectrogram and learns only a
small convolution on top:

    waveform (batch, samples)
      -> |STFT|^2, Hann window of n_fft samples, hop h, no centre padding   (batch, n_fft/2+1, frames)
      -> mel filterbank (n_mels triangles), log                            (batch, n_mels, frames)
      -> Conv1d(n_mels, C, 5, stride 2) -> GELU                             (batch, C, frames')

It keeps the conv encoder's interface (``feature_extractor(input_values)`` returns
(batch, channels, frames)) and its geometry is written in the backbone config's own
``conv_dim`` / ``conv_kernel`` / ``conv_stride`` fields: stage 0 is the STFT (kernel n_fft,
stride h, n_mels "channels"), the others are the convolutions. So the transformers code that
turns sample lengths into frame lengths (``_get_feat_extract_output_lengths``) and builds the
feature projection (``conv_dim[-1]`` wide) works unchanged, and a checkpoint's backbone
config (``frontend: logmel`` plus those fields) is all that is needed to rebuild it.

``logmel_pitch`` adds three prosodic channels per frame before the convolution: voicing
(the peak of the frame's normalised autocorrelation between 2 and 16.7 ms lags, i.e. 60..500
Hz), log2 of the pitch at that peak relative to 150 Hz (weighted by voicing, so unvoiced
frames say nothing), and the frame's log energy. One zero-padded FFT of each Hann-windowed
frame gives both the mel bands and the autocorrelation (a cosine transform of the power
below 1.5 kHz, divided by the window's own autocorrelation, as in Boersma 1993). A log-mel spectrogram only hints at pitch through harmonic spacing that a
model trained from scratch on a few hundred clips hardly learns to read; pitch level and
range are among the strongest emotion cues (and what the eGeMAPS baseline starts from).

The spectrum is a real-valued computation: a strided Conv1d of the samples with a fixed
windowed DFT basis (cosine and sine rows; a non-persistent buffer, so checkpoints do not
change), which ONNX exporters accept, where ``torch.stft``'s complex output is refused. It
equals ``torch.stft`` / ``torch.fft.rfft`` to float32 rounding (tests/model/test_frontend_export.py).
Eager torch takes the FFT (fewer operations, the training path); a graph being exported,
traced or compiled for export takes the convolution.

Every output frame depends only on the samples under its own windows (no centre padding,
no normalisation over time), so a padded batch gives each clip the frames it gets alone.

Vocal-tract-length perturbation (VTLP, Jaitly & Hinton 2013) is a training-time option of
this front-end (``augment.vtlp`` in the training config sets ``vtlp``): in ``train()`` mode
each clip's mel bands are read on a frequency axis stretched by a factor drawn uniformly
from the range (torch's generator, which training seeds), as if a speaker with a shorter
(> 1) or longer (< 1) vocal tract and a higher or lower voice had said it; tempo and
duration are untouched. ``eval()``, export and serving use the plain filterbank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

FRONTEND_TYPES = ("conv", "logmel", "logmel_pitch")
PITCH_CHANNELS = 3  # voicing, voicing x log2(f0 / 150 Hz), log frame energy
F0_RANGE_HZ = (60.0, 500.0)
PITCH_BAND_HZ = 1500.0  # the autocorrelation is taken over the band up to here (f0 and first harmonics)
VTLP_STEP = 0.01  # warp factors are drawn on this grid, so each filterbank is built once

# The log-mel geometry (transformers' conv_* fields): a 512-sample (32 ms) window every
# 160 samples (10 ms), 64 mel bands, then one convolution of width 128 over 5 frames with
# stride 2: 320 samples per output frame, the same 20 ms frames as wav2vec 2.0.
LOGMEL: dict[str, Any] = {
    "conv_dim": (64, 128),
    "conv_kernel": (512, 5),
    "conv_stride": (160, 2),
    "feat_extract_norm": "layer",  # no GroupNorm over time: padded frames cannot leak in
}


def hann(n: int) -> np.ndarray:
    """The periodic Hann window (``torch.hann_window(n)``) in float64, computed in numpy so
    that a model built on the ``meta`` device can still derive its fixed buffers."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def dft_basis(n_fft: int, size: int) -> torch.Tensor:
    """(2 * (size // 2 + 1), 1, n_fft) Conv1d weights: the rows of a ``size``-point real DFT
    of a Hann-windowed frame of ``n_fft`` samples (zero-padded past them), cosines then
    negated sines. Convolved with the samples at the hop as stride, they give the STFT's
    real and imaginary parts (``torch.stft(..., center=False)`` for ``size == n_fft``)."""
    n = np.arange(n_fft)[None, :]
    k = np.arange(size // 2 + 1)[:, None]
    angle = 2.0 * np.pi * ((k * n) % size) / size  # exact phases: the product is reduced before scaling
    w = hann(n_fft)[None, :]
    rows = np.concatenate([np.cos(angle) * w, -np.sin(angle) * w])
    return torch.tensor(rows[:, None, :], dtype=torch.float32)


def exporting() -> bool:
    """True while torch.onnx / torch.export / TorchScript tracing records the graph."""
    return bool(torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting())


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int = 16000, fmin: float = 20.0, warp: float = 1.0) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, each at least one bin wide.

    ``warp`` != 1 reads each bin at a warped frequency (VTLP, Jaitly & Hinton 2013): f -> warp x f
    up to a boundary, then linearly to the Nyquist frequency, which stays put, so no band
    falls off the top or empties."""
    freqs = vtlp_warp(np.fft.rfftfreq(n_fft, 1.0 / sample_rate), warp, sample_rate)

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(fmin), mel(sample_rate / 2), n_mels + 2))
    # below ~ n_mels/4 bands the triangles would be narrower than an FFT bin: widen them so
    # every band sees at least the bin nearest its centre (no all-zero bands)
    bin_width = sample_rate / n_fft * max(warp, 1.0)  # the warped bins are up to warp x further apart
    bank = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lo, centre, hi = edges[i], edges[i + 1], edges[i + 2]
        lo, hi = min(lo, centre - bin_width), max(hi, centre + bin_width)
        rising = (freqs - lo) / (centre - lo)
        falling = (hi - freqs) / (hi - centre)
        bank[i] = np.clip(np.minimum(rising, falling), 0.0, None)
    return bank / bank.sum(axis=1, keepdims=True)


def vtlp_warp(freqs: np.ndarray, warp: float, sample_rate: int = 16000, boundary_hz: float = 4800.0) -> np.ndarray:
    """Jaitly & Hinton's piecewise-linear frequency warp: ``warp x f`` below
    ``boundary_hz x min(warp, 1) / warp``, then a straight line to (nyquist, nyquist)."""
    if warp == 1.0:
        return freqs
    nyquist = sample_rate / 2
    knee = boundary_hz * min(warp, 1.0) / warp
    upper = nyquist - (nyquist - warp * knee) * (nyquist - freqs) / (nyquist - knee)
    return np.where(freqs <= knee, warp * freqs, upper)


class LogMelFrontEnd(nn.Module):
    """Log-mel spectrogram + small convolutions; drop-in for ``backbone.feature_extractor``.

    Stage 0 of the conv_* fields is the STFT (kernel = n_fft = window length, stride = hop,
    dim = mel bands); every later stage is a Conv1d followed by GELU."""

    def __init__(self, conv_dim, conv_kernel, conv_stride, sample_rate: int = 16000, pitch: bool = False):
        super().__init__()
        dims, kernels, strides = (list(int(v) for v in values) for values in (conv_dim, conv_kernel, conv_stride))
        if not (len(dims) == len(kernels) == len(strides) >= 2):
            raise ValueError(
                "a logmel front-end has an STFT stage and at least one conv stage: conv_dim, conv_kernel and "
                f"conv_stride need the same length >= 2, got {dims}, {kernels}, {strides}"
            )
        self.n_fft, self.hop = kernels[0], strides[0]
        # fixed, derived from the config: not weights, so not in the state dict
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        bank = torch.tensor(mel_filterbank(self.n_fft, dims[0], sample_rate), dtype=torch.float32)
        self.register_buffer("mel", bank, persistent=False)
        # the STFT as a Conv1d (see power()); the pitch analysis takes twice the points
        self.register_buffer("dft", dft_basis(self.n_fft, 2 * self.n_fft if pitch else self.n_fft), persistent=False)
        self.pitch = pitch
        if pitch:
            # one zero-padded FFT per frame serves both: the mel bands on its finer grid, and
            # the autocorrelation (no circular wrap) as a cosine transform of its low band
            fft = 2 * self.n_fft
            self.lags = (int(sample_rate / F0_RANGE_HZ[1]), min(self.n_fft // 2 + 12, int(sample_rate / F0_RANGE_HZ[0])))
            bins = int(PITCH_BAND_HZ * fft / sample_rate) + 1
            k, lag = np.arange(bins)[:, None], np.arange(self.lags[1] + 1)[None, :]
            weight = np.where((k == 0) | (k == fft // 2), 1.0, 2.0) / fft
            window = hann(self.n_fft)
            window_acf = np.correlate(window, window, mode="full")[self.n_fft - 1 : self.n_fft + self.lags[1]]
            # Boersma (1993): divide by the window's own autocorrelation
            cosines = weight * np.cos(2 * np.pi * k * lag / fft) / (window_acf / window_acf[0])
            self.register_buffer("cosines", torch.tensor(cosines, dtype=torch.float32), persistent=False)
            octaves = np.log2(np.arange(self.lags[0], self.lags[1] + 1) / self.lags[0])
            self.register_buffer("octave_cost", torch.tensor(0.03 * octaves, dtype=torch.float32), persistent=False)
            bank = torch.tensor(mel_filterbank(fft, dims[0], sample_rate), dtype=torch.float32)
            self.register_buffer("mel", bank, persistent=False)
            self.register_buffer("window_sq", torch.tensor(hann(self.n_fft)[None, None, :] ** 2, dtype=torch.float32), persistent=False)
        inputs = [dims[0] + (PITCH_CHANNELS if pitch else 0), *dims[1:]]
        self.convs = nn.ModuleList(
            nn.Conv1d(inputs[i - 1], dims[i], kernels[i], stride=strides[i]) for i in range(1, len(dims))
        )
        self.act = nn.GELU()
        self._requires_grad = True
        self.sample_rate = sample_rate
        self.vtlp: tuple[float, float] | None = None  # training-time warp range; see the module docstring
        self._warped_banks: dict[int, torch.Tensor] = {}

    def _freeze_parameters(self) -> None:
        """What transformers' ``freeze_feature_encoder`` calls."""
        for param in self.parameters():
            param.requires_grad = False
        self._requires_grad = False

    def log_mel(self, input_values: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, n_mels, frames), float32 whatever the autocast."""
        if self.pitch:
            return self._analyse(input_values)[0]
        with torch.autocast(device_type=input_values.device.type, enabled=False):
            power = self.power(input_values.float())  # (batch, freq, frames)
            return torch.log(torch.matmul(self.filterbank(power.shape[0]), power) + 1e-6)

    def filterbank(self, batch: int) -> torch.Tensor:
        """The mel filterbank: (n_mels, bins), or in training with ``vtlp`` set, one warped
        bank per clip, (batch, n_mels, bins)."""
        if self.vtlp is None or not self.training or exporting():
            return self.mel
        low, high = self.vtlp
        steps = torch.round((low + (high - low) * torch.rand(batch)) / VTLP_STEP).long().tolist()
        return torch.stack([self._warped(step) for step in steps])

    def _warped(self, step: int) -> torch.Tensor:
        """The filterbank read on a frequency axis warped by ``step * VTLP_STEP`` (energy at
        f is counted at about alpha x f, see ``vtlp_warp``), cached per factor."""
        if step not in self._warped_banks:
            n_mels, bins = self.mel.shape
            fft = 2 * (bins - 1)
            bank = mel_filterbank(fft, n_mels, self.sample_rate, warp=step * VTLP_STEP)
            self._warped_banks[step] = torch.tensor(bank, dtype=torch.float32, device=self.mel.device)
        return self._warped_banks[step].to(self.mel.device)

    def power(self, x: torch.Tensor, real_valued: bool | None = None) -> torch.Tensor:
        """(batch, samples) float32 -> |DFT|^2 of each windowed frame, (batch, bins, frames):
        by FFT in eager torch, by the Conv1d with the DFT basis when ``real_valued`` (default:
        while a graph is exported). Both give the same numbers to float32 rounding."""
        if real_valued is None:
            real_valued = exporting()
        bins = self.dft.shape[0] // 2
        if real_valued:
            spec = nn.functional.conv1d(x.unsqueeze(1), self.dft, stride=self.hop)  # (batch, 2 x bins, frames)
            return spec[:, :bins].square() + spec[:, bins:].square()
        if not self.pitch:
            spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
        else:  # zero-padded to twice the window (the pitch analysis needs the finer grid)
            frames = x.unfold(-1, self.n_fft, self.hop) * self.window
            spec = torch.fft.rfft(frames, n=2 * self.n_fft).transpose(1, 2)
        return spec.real.square() + spec.imag.square()

    def prosody(self, input_values: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, 3, frames): voicing, voiced log2(f0 / 150 Hz), log energy."""
        return self._analyse(input_values)[1]

    def _analyse(self, input_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel bands and prosodic channels from one FFT per frame (``logmel_pitch``)."""
        with torch.autocast(device_type=input_values.device.type, enabled=False):
            x = input_values.float()
            power = self.power(x).transpose(1, 2)  # (batch, frames, n_fft + 1)
            log_mel = torch.log(torch.matmul(power, self.filterbank(x.shape[0]).transpose(-1, -2)) + 1e-6).transpose(1, 2)
            acf = torch.matmul(power[..., : self.cosines.shape[0]], self.cosines)  # (batch, frames, lags), low band
            lo = self.lags[0]
            normalised = acf[..., lo:] / acf[..., :1].clamp_min(1e-8)
            # a periodic frame peaks at every multiple of its period: a small cost per octave
            # of lag picks the shortest (Praat's "octave cost")
            _, index = (normalised - self.octave_cost).max(dim=-1)
            voicing = normalised.gather(-1, index.unsqueeze(-1)).squeeze(-1).clamp(0.0, 1.0)
            log_f0 = torch.log2(self.sample_rate / (index + lo).float() / 150.0)
            frame_energy = nn.functional.conv1d(x.square().unsqueeze(1), self.window_sq, stride=self.hop).squeeze(1)
            energy = torch.log(frame_energy + 1e-6)  # sum of the windowed frame's squares
            return log_mel, torch.stack([voicing, voicing * log_f0, 0.2 * energy], dim=1)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, channels, frames)."""
        x = torch.cat(self._analyse(input_values), dim=1) if self.pitch else self.log_mel(input_values)
        for conv in self.convs:
            x = self.act(conv(x))
        return x
