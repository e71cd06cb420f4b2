"""Backbone features -> waveform: a linear layer predicts log-magnitude and phase, then ISTFT.

The inverse STFT is written out by hand (irfft, window, overlap-add with ``fold``, envelope
division) instead of calling ``torch.istft`` because WavTokenizer uses "same" padding: it
trims ``(n_fft - hop) / 2 = 480`` samples on each side, so T frames give exactly ``hop * T``
samples. ``torch.istft(center=True)`` trims ``n_fft / 2 = 640`` instead and does not give
that length or alignment. ``torch.fft.irfft`` drops the imaginary parts of the DC and
Nyquist bins, as upstream does (the model does predict non-zero phases there).

The head runs in float32: its output is audio, ``exp`` of the log-magnitude is
range-sensitive, and n_fft 1280 is not a power of two (cuFFT in half precision refuses it).
One exception: behind a bf16/fp16 backbone its input already has that precision, so the
projection takes a copy of its weight in that dtype (``use_input_dtype``) and runs on tensor
cores with float32 accumulation and output; on CUDA the float32 GEMM was ~7% of a decode (no
TF32), and the rounded weight adds ~51-57 dB SNR of error where the bf16 backbone's is ~37-45.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_MAGNITUDE = 100.0  # upstream clips exp(logmag) at 1e2


def istft_same(spec: torch.Tensor, window: torch.Tensor, hop: int) -> torch.Tensor:
    """(B, n_fft/2+1, T) complex -> (B, hop*T) real, with "same" padding."""
    n_fft = window.shape[0]
    frames = spec.shape[-1]
    pad = (n_fft - hop) // 2
    length = (frames - 1) * hop + n_fft  # overlap-added length before trimming
    ifft = torch.fft.irfft(spec, n=n_fft, dim=1, norm="backward") * window[None, :, None]  # (B, n_fft, T)
    y = F.fold(ifft, output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))[:, 0, 0, pad:-pad]
    window_sq = window.square()[None, :, None].expand(1, n_fft, frames)  # (1, n_fft, T)
    envelope = F.fold(window_sq, output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))[0, 0, 0, pad:-pad]
    return y / envelope  # envelope >= window[160]^2 + window[480]^2 > 0 for hop n_fft/4


class ISTFT(nn.Module):
    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft))  # periodic Hann; stored in the checkpoint

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return istft_same(spec, self.window, self.hop_length)


class ISTFTHead(nn.Module):
    """(B, T, dim) -> (B, hop*T) float32 audio."""

    def __init__(self, dim: int, n_fft: int, hop_length: int):
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft, hop_length)
        self.register_buffer("input_dtype_weight", None, persistent=False)  # see use_input_dtype

    @torch.no_grad()
    def use_input_dtype(self, dtype: torch.dtype | None) -> None:
        """Project inputs of ``dtype`` (bf16/fp16) with a copy of the weight in that dtype, float32
        accumulation and output (module docstring); None or float32: all float32. An
        inference-time copy (not in the state_dict); call again if the weights change."""
        half = dtype is not None and dtype != torch.float32
        self.input_dtype_weight = self.out.weight.to(dtype) if half else None

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) -> (B, T, n_fft+2) float32."""
        weight = self.input_dtype_weight
        if weight is None or x.dtype != weight.dtype:
            return self.out(x.float())
        if x.is_cuda:  # tensor cores, float32 out
            y = torch.mm(x.reshape(-1, x.shape[-1]), weight.t(), out_dtype=torch.float32)
            return (y + self.out.bias).view(*x.shape[:-1], -1)
        return F.linear(x.float(), weight.float(), self.out.bias)  # the same products (its naive twin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x).transpose(1, 2)  # (B, n_fft+2, T)
        logmag, phase = x.chunk(2, dim=1)  # (B, n_fft/2+1, T) each
        mag = torch.exp(logmag).clamp(max=MAX_MAGNITUDE)
        spec = torch.polar(mag, phase)  # mag * (cos p + i sin p)
        return self.istft(spec)
