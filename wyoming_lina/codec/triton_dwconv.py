"""Depthwise convolution over time on (B, T, C) activations, as one Triton kernel (CUDA only;
imported lazily).

The ConvNeXt blocks of the codec keep their activations as (B, T, C). PyTorch's depthwise
Conv1d wants (B, C, T) and runs a generic kernel for bf16; cuDNN takes the channels-last view
but builds kernels at run time for each new input shape (the codec sees many window and batch
sizes: a first decode of a new size paid ~1 s). This kernel reads each input once per tap from
cache and writes each output once, for any shape, with float32 accumulation.
``backbone.depthwise_conv_over_time`` on CPU (a 2-D conv on the channels-last view) is its
naive twin (bench/codec_graphs_check.py compares them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _dwconv_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,  # x, out: [B, T, C] contiguous; w: [C, K]; b: [C]
    T, C,
    K: tl.constexpr, PAD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    rt = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    rc = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = rc < C
    base = x_ptr + b * T * C
    acc = (
        tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
        + tl.load(b_ptr + rc, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    )
    for j in tl.static_range(K):
        t = rt + (j - PAD)
        ok = (t >= 0) & (t < T)
        x = tl.load(base + t[:, None] * C + rc[None, :], mask=ok[:, None] & c_ok[None, :], other=0.0)
        acc += x.to(tl.float32) * tl.load(w_ptr + rc * K + j, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    mask = (rt < T)[:, None] & c_ok[None, :]
    tl.store(out_ptr + b * T * C + rt[:, None] * C + rc[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


def depthwise_conv_time(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """x [B, T, C]; weight [C, 1, K] (a depthwise Conv1d's); bias [C]. 'same' output [B, T, C]."""
    B, T, C = x.shape
    K = weight.shape[-1]
    x = x.contiguous()
    out = torch.empty_like(x)
    block_t, block_c = 16, 128
    grid = (B, triton.cdiv(T, block_t), triton.cdiv(C, block_c))
    _dwconv_kernel[grid](
        x, weight.reshape(C, K).contiguous(), bias, out, T, C,
        K=K, PAD=padding, BLOCK_T=block_t, BLOCK_C=block_c, num_warps=4,
    )  # fmt: skip
    return out
