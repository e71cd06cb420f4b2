"""Building blocks shared by the text encoder and the recurrent stack.

Weights may be stored in bf16 on CUDA while the residual stream, norms and recurrent
state stay float32: ``Linear`` casts its input to its weight's dtype and its output back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..triton_support import kernels_deferred

GEMV_MAX_ROWS = 8  # the Triton GEMV keeps every row in registers: at most this many


def aligned_width(n: int) -> int:
    """n rounded up to a multiple of 64: odd GEMM widths (Lina's MLP 1365, its logits head 4099)
    leave cuBLAS only its unaligned kernels, so the fused inference copies pad them with zeros."""
    return -(-n // 64) * 64


def gemv_wins(rows: int, n: int) -> bool:
    """Whether the Triton GEMV beats cuBLAS for [rows, k] x [n, k]^T (bench/tune_gemv.py --sweep
    on an H200, Lina's shapes): at 1-2 rows always (2.6-4.0 vs 3.9-7.7 us per product); at 3-4
    rows for outputs of up to 1024 columns; up to 8 rows for a width cuBLAS tiles badly (the
    logits head's 4099); never beyond."""
    return rows <= 2 or (rows <= 4 and n <= 1024) or (rows <= GEMV_MAX_ROWS and n % 64 != 0)


def project(x: torch.Tensor, w: torch.Tensor, small_batch_gemv: bool = False) -> torch.Tensor:
    """x @ w^T in w's dtype. With ``small_batch_gemv`` (set on CUDA by
    ``LinaModel.fuse_projections``), products of a few rows without autograd go through the
    Triton GEMV kernel where it is faster (``gemv_wins``, model/triton_gemv.py): a decode step
    at small batch is bound by reading the weights, which cuBLAS does slowly for a few rows."""
    if (
        small_batch_gemv
        and not torch.is_grad_enabled()
        and gemv_wins(x.numel() // x.shape[-1], w.shape[0])
        and not kernels_deferred()
    ):
        from .triton_gemv import gemv

        flat = x.reshape(-1, x.shape[-1]).to(w.dtype)
        return gemv(flat, w, w.dtype).view(*x.shape[:-1], w.shape[0])
    return F.linear(x.to(w.dtype), w)


def share_rows(whole: torch.Tensor, params: list[torch.Tensor]) -> None:
    """Make each parameter a view of the next stretch of ``whole`` (contiguous), which must
    already hold its values there: an inference-time tensor built from weights (a fused or
    padded copy) then holds them once instead of beside them. A parameter of another dtype or
    device than ``whole`` is left as it is (held twice, still correct). Its state_dict, its
    readers and ``load_state_dict`` (which copies into it, so into ``whole``) see the same values;
    changing it changes ``whole`` too, which is why the ``fuse_projections`` that call this must
    be called again after weights change anyway (their other parts are computed)."""
    flat, offset = whole.view(-1), 0
    for p in params:
        n = p.numel()
        if p.dtype == whole.dtype and p.device == whole.device:
            p.data = flat[offset : offset + n].view(p.shape)
        offset += n


class Linear(nn.Linear):
    """nn.Linear that computes in its weight's dtype and returns the input's dtype."""

    small_batch_gemv = False  # see project()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        y = project(x, w, self.small_batch_gemv)
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

    small_batch_gemv = False  # see project()

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.p_in = Linear(d, 2 * hidden)
        self.p_out = Linear(hidden, d)
        self.register_buffer("padded_in", None, persistent=False)
        self.register_buffer("padded_in_bias", None, persistent=False)
        self.register_buffer("padded_out", None, persistent=False)

    @torch.no_grad()
    def fuse_projections(self) -> None:
        """Pad the hidden size with zeros to a multiple of 64 (same results, below). Lina's hidden
        size 1365 is odd, which leaves cuBLAS only its unaligned GEMM kernels (the slowest GEMMs
        of a GPU step). An inference-time tensor (not in the state_dict); call again if the
        weights change.

        ``padded_in`` is p_in's weight (gate rows, then value rows) followed by zero rows, 2 x
        the padded width in all; its bias likewise. The gate is then the first padded-width
        columns of the product and the values the padded-width columns from ``hidden`` on: lane
        i < hidden pairs gate i with value i as before, and every lane beyond meets a zero value
        (silu(anything finite) * 0 = 0) and a zero column of ``padded_out``, whose first
        ``hidden`` columns are p_out's weight. So p_in's weight and bias and p_out's weight are
        views of these tensors (``share_rows``; p_out's a strided one): each weight held once."""
        hidden = self.hidden
        padded = aligned_width(hidden)
        w_in, b_in, w_out = self.p_in.weight, self.p_in.bias, self.p_out.weight
        self.padded_in = torch.cat([w_in, w_in.new_zeros(2 * (padded - hidden), w_in.shape[1])])
        self.padded_in_bias = torch.cat([b_in, b_in.new_zeros(2 * (padded - hidden))])
        self.padded_out = w_out.new_zeros(w_out.shape[0], padded)
        self.padded_out[:, :hidden] = w_out
        share_rows(self.padded_in, [w_in])
        share_rows(self.padded_in_bias, [b_in])
        w_out.data = self.padded_out[:, :hidden]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padded_in is None:
            gate, h = self.p_in(x).chunk(2, dim=-1)
            return self.p_out(F.silu(gate) * h)
        y = project(x, self.padded_in, self.small_batch_gemv) + self.padded_in_bias
        padded = self.padded_out.shape[1]
        gate, h = y[..., :padded], y[..., self.hidden : self.hidden + padded]  # (overlapping views)
        out = project(F.silu(gate) * h, self.padded_out, self.small_batch_gemv) + self.p_out.bias
        return out.to(x.dtype)
