"""The Vocos backbone that turns codebook rows into spectrogram features.

    x = embed(f)                       conv k7, (B, 512, T) -> (B, 768, T)
    x = pos_net(x)                     ResnetBlock x2, AttnBlock, ResnetBlock x2, GroupNorm
    x = AdaLN(x, bid)                  layer_norm (no affine) * scale[bid] + shift[bid]
    x = ConvNeXt(x, bid) x num_layers
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
        x = F.layer_norm(x, (self.dim,), eps=EPS)
        return x * self.scale.weight[bid] + self.shift.weight[bid]


class ConvNeXtBlock(nn.Module):
    """x + gamma * pw2(gelu(pw1(AdaLN(dwconv7(x), bid)))), exact (erf) GELU."""

    def __init__(self, dim: int, intermediate_dim: int, num_embeddings: int, layer_scale: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = AdaLayerNorm(num_embeddings, dim)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)

    def forward(self, x, bid: int):  # (B, C, T)
        h = self.dwconv(x).transpose(1, 2)  # (B, T, C)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h, bid))))
        return x + (self.gamma * h).transpose(1, 2)


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

    def forward(self, x: torch.Tensor, bid: int = 0) -> torch.Tensor:
        x = self.pos_net(self.embed(x))  # (B, dim, T)
        x = self.norm(x.transpose(1, 2), bid).transpose(1, 2)
        for block in self.convnext:
            x = block(x, bid)
        return self.final_layer_norm(x.transpose(1, 2))  # (B, T, dim)
