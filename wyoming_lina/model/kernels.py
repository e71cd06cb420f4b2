"""The gated-linear-attention recurrence, and which implementation runs it.

Per head: S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t and o_t = (q_t * scale) S_t.
On CUDA, flash-linear-attention's Triton kernels compute exactly this (chunked for
sequences, fused recurrent for single steps). Elsewhere (a CPU, or CUDA while Triton's
kernels are deferred or missing) plain PyTorch does: ``chunked_gla`` for sequences (a prompt's
prefill, training), the per-frame loop ``naive_gla`` for single steps; the loop is also the
reference every other form is tested against. ``fla`` is imported lazily and only for CUDA
tensors, so the CPU path never touches triton.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..triton_support import triton_available

CHUNK = 32  # frames per chunk of chunked_gla (a power of two; 32 and 64 measured alike, docs/cpu.md)
CHUNKED_MIN_FRAMES = 6  # shorter sequences run the loop: as fast below ~6 frames (docs/cpu.md)


def choose_gla_kernel(device_type: str, seq_len: int, *, fla_available: bool) -> str:
    """Pick 'naive', 'chunked', 'chunk' or 'fused_recurrent' (a pure decision, testable anywhere)."""
    if device_type != "cuda" or not fla_available:
        return "chunked" if seq_len >= CHUNKED_MIN_FRAMES else "naive"
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


def _to_chunks(x: torch.Tensor, count: int, size: int) -> torch.Tensor:
    """[B, T, H, d] -> [B, H, count, size, d], zero-padded at the end. A padded frame has g = 0
    (no decay) and k = v = 0 (adds nothing): the state after the last chunk is the state at T."""
    B, T, H, d = x.shape
    x = F.pad(x.float(), (0, 0, 0, 0, 0, count * size - T))
    return x.view(B, count, size, H, d).permute(0, 3, 1, 2, 4).contiguous()


def _sums_after(g: torch.Tensor) -> torch.Tensor:
    """The sum of g over the frames after each frame of its block (dim -2), summed from the end:
    ``total - cumsum`` would cancel digits (both near -100 with strong decays) where the
    difference is small, which is exactly where its exp matters."""
    return F.pad(g[..., 1:, :].flip(-2).cumsum(-2).flip(-2), (0, 0, 0, 1))


def _chunk_scores(q: torch.Tensor, k: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """A[t, s] = sum_d q[t, d] k[s, d] exp(b[t, d] - b[s, d]) for s <= t inside each chunk (b: the
    cumulative sum of g), 0 for s > t. q, k, g: [..., C, dk] -> [..., C, C], C a power of two.

    exp(-b) alone would overflow float32 (g reaches about -6 per frame). So each pair s < t is
    split at the middle of the smallest aligned block of 2, 4, ... C frames holding both (s in its
    left half, t in its right): exp(b_t - b_s) = exp(g summed over (mid, t]) * exp(g summed over
    (s, mid]). Both exponents are <= 0 and are sums over at most C/2 frames; one batched matmul per
    block size covers every pair of that level."""
    *lead, size, dk = q.shape
    scores = q.new_zeros(*lead, size, size)
    scores.diagonal(dim1=-2, dim2=-1).copy_((q * k).sum(-1))  # s = t: exp(0)
    half = 1
    while half < size:
        blocks = size // (2 * half)
        split = (*lead, blocks, 2, half, dk)
        g_left, g_right = g.view(split).unbind(-3)
        q_right = q.view(split).select(-3, 1) * g_right.cumsum(-2).exp()  # decay over (mid, t]
        k_left = k.view(split).select(-3, 0) * _sums_after(g_left).exp()  # decay over (s, mid]
        # the (right half, left half) square of every block: [..., half, half, blocks], a view
        square = scores.view(*lead, blocks, 2, half, blocks, 2, half)[..., :, 1, :, :, 0, :]
        square.diagonal(dim1=-4, dim2=-2).add_((q_right @ k_left.transpose(-1, -2)).movedim(-3, -1))
        half *= 2
    return scores


def chunked_gla(q, k, v, g, initial_state, scale: float, chunk: int = CHUNK):
    """``naive_gla``'s recurrence a chunk of frames at a time (same arguments and results).

    The per-frame loop runs ~5 small ops per frame (~1,900 per layer over a 5 s prompt: launch-bound
    on CUDA, op-bound on a CPU). Here a chunk's frames read each other through
    attention scores (``_chunk_scores``), the state before the chunk through
    (q_t exp(b_t)) @ S, and the state after it is exp(b_C) * S + sum_s (k_s exp(b_C - b_s))^T v_s
    (b: the chunk's cumulative log decay, every exponent <= 0): one multiply-add per chunk stays
    sequential. Float32 throughout; differentiable (voice tuning runs through it)."""
    if chunk < 1 or chunk & (chunk - 1):
        raise ValueError(f"chunk must be a power of two, not {chunk}")
    B, T, H, _ = q.shape
    chunk = min(chunk, 1 << (T - 1).bit_length())  # a short sequence: one chunk, little padding
    count = -(-T // chunk)
    q, k, v, g = (_to_chunks(x, count, chunk) for x in (q.float() * scale, k, v, g))
    b = g.cumsum(-2)
    added = (k * _sums_after(g).exp()).transpose(-1, -2) @ v  # what each chunk adds to the state
    decay = b[..., -1:, :].exp().transpose(-1, -2)  # how much of the state before it remains
    state = initial_state.float()
    entering = []
    for i in range(count):
        entering.append(state)
        state = torch.addcmul(added[:, :, i], state, decay[:, :, i])
    out = _chunk_scores(q, k, g) @ v + (q * b.exp()) @ torch.stack(entering, 2)
    return out.permute(0, 2, 3, 1, 4).reshape(B, count * chunk, H, -1)[:, :T], state


def gla(q, k, v, g, initial_state, scale: float):
    """Run the recurrence with the best implementation for these tensors (``choose_gla_kernel``)."""
    usable = q.is_cuda and triton_available() and fla_available()  # fla-core's kernels are Triton's
    kernel = choose_gla_kernel(q.device.type, q.shape[1], fla_available=usable)
    if kernel == "naive":
        return naive_gla(q, k, v, g, initial_state, scale)
    if kernel == "chunked":
        return chunked_gla(q, k, v, g, initial_state, scale)
    from fla.ops.gla import chunk_gla, fused_recurrent_gla

    if kernel == "chunk":
        o, state = chunk_gla(q, k, v, g, scale=scale, initial_state=initial_state.float(), output_final_state=True)
    else:
        o, state = fused_recurrent_gla(
            q, k, v, gk=g, scale=scale, initial_state=initial_state.float(), output_final_state=True
        )
    return o.float(), state.float()
