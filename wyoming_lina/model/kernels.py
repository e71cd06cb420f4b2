"""The gated-linear-attention recurrence, and which implementation runs it.

Per head: S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t and o_t = (q_t * scale) S_t.
On CUDA, flash-linear-attention's Triton kernels compute exactly this (chunked for
sequences, fused recurrent for single steps). On CPU a plain PyTorch loop does, and it is
also the naive twin the kernels are tested against. ``fla`` is imported lazily and only
for CUDA tensors, so the CPU path never touches triton.
"""

from __future__ import annotations

import functools

import torch

from ..triton_support import triton_available


def choose_gla_kernel(device_type: str, seq_len: int, *, fla_available: bool) -> str:
    """Pick 'naive', 'chunk' or 'fused_recurrent' (a pure decision, testable anywhere)."""
    if device_type != "cuda" or not fla_available:
        return "naive"
    return "fused_recurrent" if seq_len == 1 else "chunk"


@functools.lru_cache(maxsize=1)
def fla_available() -> bool:
    try:
        import fla.ops.gla  # noqa: F401
    except Exception:  # ImportError, or triton failing to initialise
        return False
    return True


def naive_gla(q, k, v, g, initial_state, scale: float):
    """Reference recurrence in float32.

    q, k, g: [B, T, H, dk]; v: [B, T, H, dv]; initial_state: [B, H, dk, dv].
    Returns o [B, T, H, dv] (float32) and the final state [B, H, dk, dv] (float32).
    """
    q, k, v, g = (t.float() for t in (q, k, v, g))
    state = initial_state.float()
    decay = g.exp()
    outs = []
    for t in range(q.shape[1]):
        state = state * decay[:, t, :, :, None] + k[:, t, :, :, None] * v[:, t, :, None, :]
        # read-out as multiply + sum (not a matmul): compiled, it fuses with the state update
        # into one pass over the state
        outs.append((q[:, t, :, :, None] * scale * state).sum(-2))
    return torch.stack(outs, dim=1), state


def gla(q, k, v, g, initial_state, scale: float):
    """Run the recurrence with the best implementation for these tensors (``choose_gla_kernel``)."""
    usable = q.is_cuda and triton_available() and fla_available()  # fla-core's kernels are Triton's
    kernel = choose_gla_kernel(q.device.type, q.shape[1], fla_available=usable)
    if kernel == "naive":
        return naive_gla(q, k, v, g, initial_state, scale)
    from fla.ops.gla import chunk_gla, fused_recurrent_gla

    if kernel == "chunk":
        o, state = chunk_gla(q, k, v, g, scale=scale, initial_state=initial_state.float(), output_final_state=True)
    else:
        o, state = fused_recurrent_gla(
            q, k, v, gk=g, scale=scale, initial_state=initial_state.float(), output_final_state=True
        )
    return o.float(), state.float()
