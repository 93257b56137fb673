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

Every output frame depends only on the samples under its own windows (no centre padding,
no normalisation over time), so a padded batch gives each clip the frames it gets alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

FRONTEND_TYPES = ("conv", "logmel")

# The log-mel geometry (transformers' conv_* fields): a 512-sample (32 ms) window every
# 160 samples (10 ms), 64 mel bands, then one convolution of width 128 over 5 frames with
# stride 2: 320 samples per output frame, the same 20 ms frames as wav2vec 2.0.
LOGMEL: dict[str, Any] = {
    "conv_dim": (64, 128),
    "conv_kernel": (512, 5),
    "conv_stride": (160, 2),
    "feat_extract_norm": "layer",  # no GroupNorm over time: padded frames cannot leak in
}


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int = 16000, fmin: float = 20.0) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, each at least one bin wide."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(fmin), mel(sample_rate / 2), n_mels + 2))
    # below ~ n_mels/4 bands the triangles would be narrower than an FFT bin: widen them so
    # every band sees at least the bin nearest its centre (no all-zero bands)
    bin_width = sample_rate / n_fft
    bank = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lo, centre, hi = edges[i], edges[i + 1], edges[i + 2]
        lo, hi = min(lo, centre - bin_width), max(hi, centre + bin_width)
        rising = (freqs - lo) / (centre - lo)
        falling = (hi - freqs) / (hi - centre)
        bank[i] = np.clip(np.minimum(rising, falling), 0.0, None)
    return bank / bank.sum(axis=1, keepdims=True)


class LogMelFrontEnd(nn.Module):
    """Log-mel spectrogram + small convolutions; drop-in for ``backbone.feature_extractor``.

    Stage 0 of the conv_* fields is the STFT (kernel = n_fft = window length, stride = hop,
    dim = mel bands); every later stage is a Conv1d followed by GELU."""

    def __init__(self, conv_dim, conv_kernel, conv_stride, sample_rate: int = 16000):
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
        self.convs = nn.ModuleList(
            nn.Conv1d(dims[i - 1], dims[i], kernels[i], stride=strides[i]) for i in range(1, len(dims))
        )
        self.act = nn.GELU()
        self._requires_grad = True

    def _freeze_parameters(self) -> None:
        """What transformers' ``freeze_feature_encoder`` calls."""
        for param in self.parameters():
            param.requires_grad = False
        self._requires_grad = False

    def log_mel(self, input_values: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, n_mels, frames), float32 whatever the autocast."""
        with torch.autocast(device_type=input_values.device.type, enabled=False):
            x = input_values.float()
            spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
            power = spec.real.square() + spec.imag.square()  # (batch, freq, frames)
            return torch.log(torch.matmul(self.mel, power) + 1e-6)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, channels, frames)."""
        x = self.log_mel(input_values)
        for conv in self.convs:
            x = self.act(conv(x))
        return x
