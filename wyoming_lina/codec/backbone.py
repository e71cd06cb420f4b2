"""The Vocos backbone that turns codebook rows into spectrogram features.

    x = embed(f)                       conv k7, (B, 512, T) -> (B, 768, T)
    x = pos_net(x)                     ResnetBlock x2, AttnBlock, ResnetBlock x2, GroupNorm
    x = AdaLN(x, bid)                  layer_norm with scale[bid], shift[bid] as its affine, -> (B, T, 768)
    x = ConvNeXt(x, bid) x num_layers  in (B, T, C): no layout changes between blocks
    x = final_layer_norm(x)            -> (B, T, 768)

Not causal: the attention block and the ten GroupNorms see the whole sequence, which is
why streaming needs windows (see ``streaming.py``). ``bid`` (the bandwidth id) is one int
per batch and selects the AdaLN rows. Module names and registration order reproduce the
upstream ``state_dict`` (``pos_net`` comes last).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..triton_support import triton_available

EPS = 1e-6


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=EPS, affine=True)


class ResnetBlock(nn.Module):
    """x + conv2(silu(gn2(conv1(silu(gn1(x)))))), convs k3 zero-padded (dropout: eval no-op)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.norm2 = group_norm(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x):  # (B, C, T)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all frames, 1x1-conv projections, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv1d(channels, channels, 1)
        self.k = nn.Conv1d(channels, channels, 1)
        self.v = nn.Conv1d(channels, channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x):  # (B, C, T)
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)  # (B, C, T) each
        scores = torch.bmm(q.transpose(1, 2), k) * q.shape[1] ** -0.5  # (B, Tq, Tk)
        attn = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        h = torch.bmm(v, attn.transpose(1, 2))  # (B, C, Tq)
        return x + self.proj_out(h)


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine, then a per-bandwidth-id scale and shift (nn.Embedding tables)."""

    def __init__(self, num_embeddings: int, dim: int):
        super().__init__()
        self.dim = dim
        self.scale = nn.Embedding(num_embeddings, dim)
        self.shift = nn.Embedding(num_embeddings, dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x, bid: int):  # (B, T, C)
        # the scale and shift as layer_norm's affine: one kernel instead of three on a GPU
        return F.layer_norm(x, (self.dim,), self.scale.weight[bid], self.shift.weight[bid], eps=EPS)


def depthwise_conv_over_time(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A depthwise 'same' Conv1d over time applied to x (B, T, C) without leaving that layout.

    On CUDA one Triton kernel (``triton_dwconv.py``): PyTorch's depthwise Conv1d wants (B, C, T)
    and runs a generic bf16 kernel, which with the transposed copies around it was ~45% of a
    decode's kernel time. Elsewhere, (B, T, C) memory being the channels-last layout of
    (B, C, 1, T), it runs as a 1 x k 2-D conv on that view (the naive twin)."""
    if x.is_cuda and triton_available():
        from .triton_dwconv import depthwise_conv_time

        return depthwise_conv_time(x, conv.weight, conv.bias, conv.padding[0])
    return dwconv_channels_last(x, conv)


def dwconv_channels_last(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``depthwise_conv_over_time`` as a 2-D conv on the channels-last view (B, C, 1, T)."""
    x4 = x.transpose(1, 2).unsqueeze(2)  # (B, C, 1, T) view, channels-last strides
    weight = conv.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (C, 1, 1, k)
    y = F.conv2d(x4, weight, conv.bias, padding=(0, conv.padding[0]), groups=conv.groups)
    return y.squeeze(2).transpose(1, 2).contiguous()  # no copy when y came out channels-last


class ConvNeXtBlock(nn.Module):
    """x + gamma * pw2(gelu(pw1(AdaLN(dwconv7(x), bid)))), exact (erf) GELU; x is (B, T, C)."""

    def __init__(self, dim: int, intermediate_dim: int, num_embeddings: int, layer_scale: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = AdaLayerNorm(num_embeddings, dim)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.register_buffer("scaled_pw2_weight", None, persistent=False)  # see fold_layer_scale
        self.register_buffer("scaled_pw2_bias", None, persistent=False)

    @torch.no_grad()
    def fold_layer_scale(self) -> None:
        """gamma * pw2(h) = h @ (gamma W)^T + gamma b: keep pw2 with gamma folded in, so a decode
        skips one elementwise pass over (B, T, C) per block (same result up to rounding). An
        inference-time copy (not in the state_dict); call again if the weights change."""
        gamma = self.gamma.float()
        self.scaled_pw2_weight = (self.pwconv2.weight.float() * gamma[:, None]).to(self.pwconv2.weight.dtype)
        self.scaled_pw2_bias = (self.pwconv2.bias.float() * gamma).to(self.pwconv2.bias.dtype)

    def forward(self, x, bid: int):  # (B, T, C)
        h = depthwise_conv_over_time(x, self.dwconv)
        h = F.gelu(self.pwconv1(self.norm(h, bid)))
        if self.scaled_pw2_weight is None:
            return x + self.gamma * self.pwconv2(h)
        return x + F.linear(h, self.scaled_pw2_weight, self.scaled_pw2_bias)


class VocosBackbone(nn.Module):
    """(B, input_channels, T) features, int bandwidth id -> (B, T, dim)."""

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int, num_embeddings: int):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, 7, padding=3)
        self.norm = AdaLayerNorm(num_embeddings, dim)
        scale = 1.0 / max(num_layers, 1)
        self.convnext = nn.ModuleList(
            [ConvNeXtBlock(dim, intermediate_dim, num_embeddings, scale) for _ in range(num_layers)]
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=EPS)
        self.pos_net = nn.Sequential(
            ResnetBlock(dim), ResnetBlock(dim), AttnBlock(dim), ResnetBlock(dim), ResnetBlock(dim), group_norm(dim)
        )

    def fold_layer_scales(self) -> None:
        for block in self.convnext:
            block.fold_layer_scale()

    def forward(self, x: torch.Tensor, bid: int = 0) -> torch.Tensor:
        x = self.pos_net(self.embed(x))  # (B, dim, T)
        x = self.norm(x.transpose(1, 2).contiguous(), bid)  # (B, T, dim) from here on
        for block in self.convnext:
            x = block(x, bid)
        return self.final_layer_norm(x)
