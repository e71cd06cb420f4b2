"""One decode step of a GLA layer as ONE Triton kernel (CUDA only; imported lazily).

At T=1 a GLA layer between its two GEMMs is: the short causal convs of q/k/v (shift the
window, dot product, SiLU), the decay gate logsigmoid(gk + b) / 16, the state update
S = diag(exp(g)) S + k^T v with the read-out o = (q * scale) S, the per-head RMS norm of o and
its SiLU output gate. Left to the compiler that is ~9 kernels per layer, and the state
[B, H, dk, dv] (float32; 67 MB per layer at batch 256) is read more than once. This kernel does
it all with one read and one write of each state, updating the conv windows and S in place.
One program per (row, head). ``GatedLinearAttention.step_in_place`` calls it (when
``fused_step`` is set); the plain PyTorch path of the same layer is its naive twin.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import GATE_LOGIT_NORMALIZER


@triton.jit
def _short_conv(window_ptr, weight_ptr, x, N: tl.constexpr, KC: tl.constexpr):
    """Shift x into the [N, KC] window (oldest first) in place; return SiLU(window . weight)."""
    rn = tl.arange(0, N)
    rc = tl.arange(0, KC)
    offs = rn[:, None] * KC + rc[None, :]
    shifted = tl.load(window_ptr + offs + 1, mask=rc[None, :] < KC - 1, other=0.0)
    window = tl.where(rc[None, :] == KC - 1, x[:, None], shifted)
    tl.debug_barrier()  # every thread has read the old window before any overwrites it
    tl.store(window_ptr + offs, window)
    y = tl.sum(window * tl.load(weight_ptr + offs), axis=1)
    return y * tl.sigmoid(y)


@triton.jit
def _gla_decode_kernel(
    proj_ptr, proj_stride,  # [B, P] one GEMM's output: q | k | v | output gate | decay-gate logits
    conv_q_ptr, conv_k_ptr, conv_v_ptr, cq_stride, ck_stride, cv_stride,  # [B, C, KC] float32 windows
    wq_ptr, wk_ptr, wv_ptr,  # [C, 1, KC] depthwise conv weights (float32)
    state_ptr, state_stride,  # [B, H, DK, DV] float32
    gate_bias_ptr, norm_weight_ptr,  # [H * DK], [DV] float32
    out_ptr, out_stride,  # [B, H * DV]
    scale, eps,
    DK: tl.constexpr, DV: tl.constexpr, KC: tl.constexpr, KEY: tl.constexpr, VAL: tl.constexpr,
    NORMALIZER: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    rk = tl.arange(0, DK)
    rv = tl.arange(0, DV)
    row = proj_ptr + b * proj_stride
    q = tl.load(row + h * DK + rk).to(tl.float32)
    k = tl.load(row + KEY + h * DK + rk).to(tl.float32)
    v = tl.load(row + 2 * KEY + h * DV + rv).to(tl.float32)
    out_gate = tl.load(row + 2 * KEY + VAL + h * DV + rv).to(tl.float32)
    gk = tl.load(row + 2 * KEY + 2 * VAL + h * DK + rk).to(tl.float32) + tl.load(gate_bias_ptr + h * DK + rk)

    q = _short_conv(conv_q_ptr + b * cq_stride + h * DK * KC, wq_ptr + h * DK * KC, q, DK, KC)
    k = _short_conv(conv_k_ptr + b * ck_stride + h * DK * KC, wk_ptr + h * DK * KC, k, DK, KC)
    v = _short_conv(conv_v_ptr + b * cv_stride + h * DV * KC, wv_ptr + h * DV * KC, v, DV, KC)

    log_decay = (tl.minimum(gk, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(gk)))) / NORMALIZER  # logsigmoid / 16
    s_ptrs = state_ptr + b * state_stride + h * DK * DV + rk[:, None] * DV + rv[None, :]
    s = tl.load(s_ptrs) * tl.exp(log_decay)[:, None] + k[:, None] * v[None, :]
    tl.store(s_ptrs, s)
    o = tl.sum(s * (q * scale)[:, None], axis=0)  # [DV]

    o = o * tl.rsqrt(tl.sum(o * o, axis=0) / DV + eps) * tl.load(norm_weight_ptr + rv)
    o = o * (out_gate * tl.sigmoid(out_gate))
    tl.store(out_ptr + b * out_stride + h * DV + rv, o.to(out_ptr.dtype.element_ty))


def _check_layout(name: str, t: torch.Tensor, inner: tuple[int, ...]) -> None:
    """The kernel indexes rows by their batch stride and everything inside a row densely."""
    expected, size = [], 1
    for dim in reversed(t.shape[1:]):
        expected.insert(0, size)
        size *= dim
    if t.dtype != torch.float32 or tuple(t.shape[1:]) != inner or list(t.stride()[1:]) != expected:
        raise ValueError(
            f"gla_decode_step: {name} must be float32 {inner} dense per row, got {t.dtype} {tuple(t.shape)} {t.stride()}"
        )


def num_warps(dk: int, dv: int) -> int:
    """Warps per (row, head) program. bench/tune_gla_step.py on an H200 (dk 64, dv 128): 2 warps
    is fastest at batch 1, 64 and 256 (3.3 / 8.4 / 44.6 us vs 3.4 / 9.8 / 46.0 with 4)."""
    return 2 if dk * dv <= 8192 else 4


@torch.library.custom_op("wyoming_lina::gla_decode_step", mutates_args=("conv_q", "conv_k", "conv_v", "state"))
def gla_decode_step(
    proj: torch.Tensor,
    conv_q: torch.Tensor,
    conv_k: torch.Tensor,
    conv_v: torch.Tensor,
    conv_q_weight: torch.Tensor,
    conv_k_weight: torch.Tensor,
    conv_v_weight: torch.Tensor,
    state: torch.Tensor,
    gate_bias: torch.Tensor,
    norm_weight: torch.Tensor,
    scale: float,
    eps: float,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """proj [B, 2*key + 2*value + key] -> gated, normalised read-out [B, value] in out_dtype.

    Updates conv_q/conv_k/conv_v ([B, C, conv_size]) and state ([B, H, dk, dv]) in place."""
    B, H, DK, DV = state.shape
    KC = conv_q.shape[2]
    key, val = H * DK, H * DV
    _check_layout("state", state, (H, DK, DV))
    for name, t, c in (("conv_q", conv_q, key), ("conv_k", conv_k, key), ("conv_v", conv_v, val)):
        _check_layout(name, t, (c, KC))
    if proj.shape != (B, 3 * key + 2 * val) or proj.stride(1) != 1:
        raise ValueError(
            f"gla_decode_step: proj must be [B, {3 * key + 2 * val}] with unit stride, got {tuple(proj.shape)}"
        )
    out = torch.empty(B, val, dtype=out_dtype, device=proj.device)
    if B == 0:
        return out
    _gla_decode_kernel[(B, H)](
        proj, proj.stride(0),
        conv_q, conv_k, conv_v, conv_q.stride(0), conv_k.stride(0), conv_v.stride(0),
        conv_q_weight.contiguous(), conv_k_weight.contiguous(), conv_v_weight.contiguous(),
        state, state.stride(0),
        gate_bias, norm_weight,
        out, out.stride(0),
        scale, eps,
        DK=DK, DV=DV, KC=KC, KEY=key, VAL=val, NORMALIZER=GATE_LOGIT_NORMALIZER,
        num_warps=num_warps(DK, DV),
    )  # fmt: skip
    return out


@gla_decode_step.register_fake
def _(
    proj,
    conv_q,
    conv_k,
    conv_v,
    conv_q_weight,
    conv_k_weight,
    conv_v_weight,
    state,
    gate_bias,
    norm_weight,
    scale,
    eps,
    out_dtype,
):
    return proj.new_empty(state.shape[0], state.shape[1] * state.shape[3], dtype=out_dtype)
