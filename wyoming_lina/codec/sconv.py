"""SEANet's weight-normed convolutions and its length-preserving reflect padding.

Two details decide whether the codes come out right:

* **Padding.** Every encoder conv pads so the output has ``ceil(L / stride)`` frames:
  ``total = k_eff - stride`` split ``left = total - total // 2``, ``right = total // 2 + extra``
  (``extra`` completes the last window), in *reflect* mode. Inputs too short to reflect
  (``L <= max(left, right)``) get zeros on the right first, which are cut off again after.
* **Weight norm, legacy names.** Upstream uses ``torch.nn.utils.weight_norm``, so the
  checkpoint stores ``weight_g`` (one gain per dim-0 slice) and ``weight_v``; the conv
  weight is ``g * v / ||v||`` with the norm over every dim but 0. For a transposed conv
  dim 0 is the *input* channel axis. We keep ``g`` and ``v`` as parameters (so
  ``state_dict()`` has the upstream names) and fold them on every call: the encoder only
  runs on voice clips, so the fold costs nothing that matters.

The ``conv.conv`` / ``convtr.convtr`` nesting exists only to reproduce the upstream key names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(length: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """(left, right) padding of a non-causal SEANet conv; output length is ceil(length / stride)."""
    k_eff = (kernel - 1) * dilation + 1
    total = k_eff - stride
    n_frames = math.ceil((length - k_eff + total) / stride + 1)
    extra = (n_frames - 1) * stride + k_eff - total - length
    return total - total // 2, total // 2 + extra


def reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect-pad the last axis, also for inputs shorter than the padding (upstream pad1d rule)."""
    length = x.shape[-1]
    max_pad = max(left, right)
    zeros = 0
    if length <= max_pad:  # reflect needs length > pad: zero-extend, reflect, cut the zeros' echo off
        zeros = max_pad - length + 1
        x = F.pad(x, (0, zeros))
    x = F.pad(x, (left, right), mode="reflect")
    return x[..., : x.shape[-1] - zeros]


def weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """w = g * v / ||v||, norm over all dims but 0 (one norm per dim-0 slice)."""
    return g * v / v.norm(dim=tuple(range(1, v.dim())), keepdim=True)


class WNConv1d(nn.Module):
    """Conv1d with legacy weight-norm parameters (bias, weight_g, weight_v: upstream order)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.stride, self.dilation, self.kernel = stride, dilation, kernel
        self.bias = nn.Parameter(torch.zeros(cout))
        self.weight_g = nn.Parameter(torch.ones(cout, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(cout, cin, kernel) / math.sqrt(cin * kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, L) -> (B, Cout, L')
        w = weight_norm(self.weight_g, self.weight_v)
        return F.conv1d(x, w, self.bias, stride=self.stride, dilation=self.dilation)


class WNConvTranspose1d(nn.Module):
    """ConvTranspose1d with legacy weight norm; g is per INPUT channel ([in, 1, 1]).

    Only the unused SEANet decoder has these; it exists so the checkpoint loads strictly.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.bias = nn.Parameter(torch.zeros(cout))
        self.weight_g = nn.Parameter(torch.ones(cin, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(cin, cout, kernel) / math.sqrt(cin * kernel))


class _NormConv1d(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.conv = WNConv1d(*args, **kwargs)


class _NormConvTranspose1d(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.convtr = WNConvTranspose1d(*args, **kwargs)


class SConv1d(nn.Module):
    """Weight-normed conv with SEANet "same" reflect padding: (B, Cin, L) -> (B, Cout, ceil(L/stride))."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = _NormConv1d(cin, cout, kernel, stride=stride, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.conv.conv
        left, right = same_padding(x.shape[-1], inner.kernel, inner.stride, inner.dilation)
        return inner(reflect_pad(x, left, right))


class SConvTranspose1d(nn.Module):
    """Parameter holder for the unused SEANet decoder's upsampling convs (never run)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.convtr = _NormConvTranspose1d(cin, cout, kernel, stride=stride)
