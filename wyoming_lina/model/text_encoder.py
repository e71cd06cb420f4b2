"""Text encoder: pre-norm transformer with rotary self-attention and SwiGLU.

Non-causal, no output projection in the attention, no final norm (as upstream).
Rotary turns only the first half of each head's channels, in interleaved pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerNorm, Linear, SwiGLU


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x: [B, H, N, hd]; freqs: [hd/4]. Pair (2i, 2i+1) turns by angle pos * freqs[i]."""
    n, rot_dim = x.shape[2], 2 * freqs.shape[0]
    angles = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * freqs.float()[None, :]
    angles = angles.repeat_interleave(2, dim=-1)  # (N, rot_dim)
    xr, rest = x[..., :rot_dim].float(), x[..., rot_dim:]
    pairs = xr.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    out = xr * angles.cos() + rotated * angles.sin()
    return torch.cat([out.to(x.dtype), rest], dim=-1)


class RotarySelfAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = Linear(d, 3 * d)
        self.rotary = nn.Module()
        self.rotary.freqs = nn.Parameter(torch.zeros(d // heads // 4), requires_grad=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, N, d = x.shape
        q, k, v = (t.view(B, N, self.heads, -1).transpose(1, 2) for t in self.qkv(x).split(d, dim=-1))
        q, k = apply_rotary(q, self.rotary.freqs), apply_rotary(k, self.rotary.freqs)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N) keys
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # scale hd^-0.5
        return y.transpose(1, 2).reshape(B, N, d)


class TextBlock(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = LayerNorm(d)
        self.tmix = RotarySelfAttention(d, heads)
        self.norm2 = LayerNorm(d)
        self.cmix = SwiGLU(d, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.tmix(self.norm1(x), mask)
        return x + self.cmix(self.norm2(x))


class TextEncoder(nn.Module):
    def __init__(self, d: int, heads: int, layers: int, hidden: int):
        super().__init__()
        self.sa = nn.ModuleList(TextBlock(d, heads, hidden) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, N, d] embedded text; mask: [B, N] True for real tokens."""
        for block in self.sa:
            x = block(x, mask)
        return x
