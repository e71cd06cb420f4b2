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

    HIDDEN_MULTIPLE = 64  # see fuse_projections

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.p_in = Linear(d, 2 * hidden)
        self.p_out = Linear(hidden, d)
        self.register_buffer("padded_in", None, persistent=False)
        self.register_buffer("padded_in_bias", None, persistent=False)
        self.register_buffer("padded_out", None, persistent=False)

    @torch.no_grad()
    def fuse_projections(self) -> None:
        """Pad the hidden size with zero rows/columns to a multiple of 64 (same results: silu(0) * 0
        = 0 meets zero columns). Lina's hidden size 1365 is odd, which leaves cuBLAS only its
        unaligned GEMM kernels (the slowest GEMMs of a GPU step). An inference-time copy (not in
        the state_dict); call again if the weights change."""
        hidden = self.p_out.weight.shape[1]
        padded = -(-hidden // self.HIDDEN_MULTIPLE) * self.HIDDEN_MULTIPLE
        w_in, b_in = self.p_in.weight, self.p_in.bias
        self.padded_in = w_in.new_zeros(2 * padded, w_in.shape[1])
        self.padded_in_bias = b_in.new_zeros(2 * padded)
        for half in range(2):  # gate rows, then value rows
            self.padded_in[half * padded : half * padded + hidden] = w_in[half * hidden : (half + 1) * hidden]
            self.padded_in_bias[half * padded : half * padded + hidden] = b_in[half * hidden : (half + 1) * hidden]
        self.padded_out = self.p_out.weight.new_zeros(self.p_out.weight.shape[0], padded)
        self.padded_out[:, :hidden] = self.p_out.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padded_in is None:
            gate, h = self.p_in(x).chunk(2, dim=-1)
            return self.p_out(F.silu(gate) * h)
        w = self.padded_in
        y = F.linear(x.to(w.dtype), w) + self.padded_in_bias
        gate, h = y.chunk(2, dim=-1)
        w_out = self.padded_out
        out = F.linear((F.silu(gate) * h).to(w_out.dtype), w_out) + self.p_out.bias
        return out.to(x.dtype)
