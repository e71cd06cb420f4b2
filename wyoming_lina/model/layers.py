"""Building blocks shared by the text encoder and the recurrent stack.

Weights may be stored in bf16 on CUDA while the residual stream, norms and recurrent
state stay float32: ``Linear`` casts its input to its weight's dtype and its output back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Linear):
    """nn.Linear that computes in its weight's dtype and returns the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        y = F.linear(x.to(w.dtype), w)
        if self.bias is not None:  # added in the bias's dtype (float32), where it fuses with what follows
            y = y + self.bias
        return y.to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the weight dtype (PyTorch defaults: eps 1e-5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps).to(
            x.dtype
        )


class SwiGLU(nn.Module):
    """p_out(silu(gate) * x) with gate, x = p_in(x).chunk(2)."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.p_in = Linear(d, 2 * hidden)
        self.p_out = Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, h = self.p_in(x).chunk(2, dim=-1)
        return self.p_out(F.silu(gate) * h)
