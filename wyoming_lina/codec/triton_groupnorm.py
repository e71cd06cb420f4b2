"""GroupNorm (+ SiLU) over (B, T, C) activations, as two Triton kernels (CUDA only; imported
lazily).

The codec's pos_net runs in (B, T, C) so that its convolutions take cuDNN's channels-last
path without layout transforms (``backbone.conv_over_time``). PyTorch's CUDA GroupNorm only
reads (B, C, T) and would copy the input back; these kernels read it in place: one program
per (batch row, group) gathers the group's mean and then its variance (two passes over
T x C/G values, float32), then an elementwise pass normalises, applies the affine and,
optionally, the SiLU that follows every GroupNorm of a ResnetBlock. ``backbone.group_norm_over_time``
on the CPU (``F.group_norm`` on the transposed view) is the naive twin
(bench/codec_graphs_check.py compares them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _stats_kernel(
    x_ptr, mean_ptr, rstd_ptr,  # x: [B, T, C] contiguous; mean, rstd: [B, G] float32
    T, C, G, eps,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1)
    rc = tl.arange(0, GROUP_PAD)
    c_ok = rc < GROUP
    base = x_ptr + b * T * C + g * GROUP
    total = tl.zeros((BLOCK_T, GROUP_PAD), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        rt = t0 + tl.arange(0, BLOCK_T)
        mask = (rt < T)[:, None] & c_ok[None, :]
        total += tl.load(base + rt[:, None] * C + rc[None, :], mask=mask, other=0.0).to(tl.float32)
    n = T * GROUP
    mean = tl.sum(total) / n
    squares = tl.zeros((BLOCK_T, GROUP_PAD), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):  # second pass over the (cached) group: no cancellation
        rt = t0 + tl.arange(0, BLOCK_T)
        mask = (rt < T)[:, None] & c_ok[None, :]
        v = tl.load(base + rt[:, None] * C + rc[None, :], mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, v - mean, 0.0)
        squares += d * d
    var = tl.sum(squares) / n
    tl.store(mean_ptr + b * G + g, mean)
    tl.store(rstd_ptr + b * G + g, 1.0 / tl.sqrt(var + eps))


@triton.jit
def _apply_kernel(
    x_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, out_ptr,
    T, C, G,
    GROUP: tl.constexpr, SILU: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    rt = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    rc = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = rc < C
    g = rc // GROUP
    mean = tl.load(mean_ptr + b * G + g, mask=c_ok, other=0.0)
    rstd = tl.load(rstd_ptr + b * G + g, mask=c_ok, other=0.0)
    scale = rstd * tl.load(w_ptr + rc, mask=c_ok, other=0.0).to(tl.float32)
    shift = tl.load(bias_ptr + rc, mask=c_ok, other=0.0).to(tl.float32) - mean * scale
    mask = (rt < T)[:, None] & c_ok[None, :]
    offsets = b * T * C + rt[:, None] * C + rc[None, :]
    y = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32) * scale[None, :] + shift[None, :]
    if SILU:
        y = y * tl.sigmoid(y)
    tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)


def group_norm_time(
    x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float, silu: bool
) -> torch.Tensor:
    """x [B, T, C] -> GroupNorm over (T, C/groups) per group, affine, then SiLU if ``silu``."""
    B, T, C = x.shape
    group = C // groups
    x = x.contiguous()
    mean = torch.empty(B, groups, dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    _stats_kernel[(B, groups)](
        x, mean, rstd, T, C, groups, eps,
        GROUP=group, GROUP_PAD=triton.next_power_of_2(group), BLOCK_T=64, num_warps=4,
    )  # fmt: skip
    out = torch.empty_like(x)
    block_t, block_c = 16, 128
    _apply_kernel[(B, triton.cdiv(T, block_t), triton.cdiv(C, block_c))](
        x, mean, rstd, weight, bias, out, T, C, groups,
        GROUP=group, SILU=silu, BLOCK_T=block_t, BLOCK_C=block_c, num_warps=4,
    )  # fmt: skip
    return out
