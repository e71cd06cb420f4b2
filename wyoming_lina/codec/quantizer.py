"""The single 4096 x 512 codebook: nearest-row encoding and row lookup.

Upstream wraps one EuclideanCodebook in ``quantizer.vq.layers.0._codebook``; the empty
wrapper modules below exist only for those key names. Of the four buffers only ``embed``
matters at inference (``inited``, ``cluster_size``, ``embed_avg`` are k-means/EMA training
state), but all four are in the checkpoint and load strictly.
"""

from __future__ import annotations

import torch
from torch import nn


class Codebook(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("inited", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed", torch.randn(size, dim))
        self.register_buffer("embed_avg", torch.zeros(size, dim))


class _Layer(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self._codebook = Codebook(size, dim)


class _VQ(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.layers = nn.ModuleList([_Layer(size, dim)])


class Quantizer(nn.Module):
    """codes <-> codebook rows. Codes are (B, T) here; upstream's layout is (n_q=1, B, T)."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.vq = _VQ(size, dim)

    @property
    def embed(self) -> torch.Tensor:  # (K, D)
        return self.vq.layers[0]._codebook.embed

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, T) float -> (B, T) long: the nearest row by Euclidean distance."""
        x = x.transpose(1, 2).float()  # (B, T, D)
        embed = self.embed.float()  # (K, D)
        # -(|x|^2 - 2 x.e + |e|^2), argmax: the same expression (and rounding) as upstream
        dist = -(x.pow(2).sum(-1, keepdim=True) - 2 * x @ embed.t() + embed.pow(2).sum(-1))  # (B, T, K)
        return dist.argmax(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, T) long -> (B, D, T) codebook rows."""
        return nn.functional.embedding(codes, self.embed).transpose(1, 2)
