"""x @ W^T for a handful of rows, as one Triton kernel (CUDA only; imported lazily).

A decode step at small batch multiplies 1-8 rows by every weight matrix of the model
(~245 MB of bf16 per step). cuBLAS picks tiles made for large M and reads the weights at
~0.8 TB/s there; here each program owns a few output columns, streams their weight rows once
at full width and keeps every row of x in registers, so the kernel is bound by the weight read.
Each output element is a sum over K in an order fixed by the tiles (``tiles``: one choice for 1-2
rows, others for 3-4 and 5-8), so within a row-count class a row's result does not depend on the
rest of the batch. ``F.linear`` is its naive twin
(bench/tune_gemv.py compares them and picks the tile sizes below).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .layers import GEMV_MAX_ROWS as MAX_ROWS  # layers.gemv_wins says where this kernel is used


@triton.jit
def _gemv_kernel(
    x_ptr, x_stride,  # [M, K] any float dtype
    w_ptr, w_stride,  # [N, K]
    out_ptr, out_stride,  # [M, N]
    M, N, K,
    MP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
):  # fmt: skip
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.arange(0, MP)
    rk = tl.arange(0, BLOCK_K)
    n_ok = rn < N
    acc = tl.zeros((BLOCK_N, MP, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        if EVEN_K:
            w = tl.load(w_ptr + rn[:, None] * w_stride + kk[None, :], mask=n_ok[:, None], other=0.0)
            x = tl.load(x_ptr + rm[:, None] * x_stride + kk[None, :], mask=rm[:, None] < M, other=0.0)
        else:
            k_ok = kk < K
            w = tl.load(w_ptr + rn[:, None] * w_stride + kk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            x = tl.load(x_ptr + rm[:, None] * x_stride + kk[None, :], mask=(rm[:, None] < M) & k_ok[None, :], other=0.0)
        acc += w.to(tl.float32)[:, None, :] * x.to(tl.float32)[None, :, :]
    y = tl.sum(acc, axis=2)  # [BLOCK_N, MP]
    tl.store(
        out_ptr + rm[None, :] * out_stride + rn[:, None],
        y.to(out_ptr.dtype.element_ty),
        mask=n_ok[:, None] & (rm[None, :] < M),
    )


def tiles(rows: int) -> tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps, num_stages): the fastest per row count in
    bench/tune_gemv.py --sweep on an H200 (Lina's k 1024/1408, n 1024-4099). Four output columns
    per program keep enough programs in flight for n = 1024; the register budget is
    BLOCK_N x rows x BLOCK_K accumulators over the program's threads."""
    if rows <= 2:
        return 4, 512, 2, 3
    if rows <= 4:
        return 4, 512, 4, 1
    return 4, 128, 2, 3


@torch.library.custom_op("wyoming_lina::gemv", mutates_args=())
def gemv(x: torch.Tensor, weight: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """x [M, K] (M <= MAX_ROWS) @ weight[N, K]^T -> [M, N] in out_dtype (float32 accumulation)."""
    M, K = x.shape
    N = weight.shape[0]
    if M > MAX_ROWS or weight.shape[1] != K or x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError(
            f"gemv: x {tuple(x.shape)} and weight {tuple(weight.shape)} need M <= {MAX_ROWS}, unit K stride"
        )
    out = torch.empty(M, N, dtype=out_dtype, device=x.device)
    if M > 0:
        launch(x, weight, out, tiles(M))
    return out


def launch(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, config: tuple[int, int, int, int]) -> None:
    """Run the kernel with explicit (BLOCK_N, BLOCK_K, num_warps, num_stages) (tuning)."""
    (M, K), N = x.shape, weight.shape[0]
    block_n, block_k, warps, stages = config
    _gemv_kernel[(triton.cdiv(N, block_n),)](
        x, x.stride(0), weight, weight.stride(0), out, out.stride(0), M, N, K,
        MP=triton.next_power_of_2(M), BLOCK_N=block_n, BLOCK_K=block_k, EVEN_K=K % block_k == 0,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip


@gemv.register_fake
def _(x, weight, out_dtype):
    return x.new_empty(x.shape[0], weight.shape[0], dtype=out_dtype)
