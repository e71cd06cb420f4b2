"""Gated linear attention (the recurrent time-mix) and its pre-norm block.

One code path serves a whole sequence (prompt prefill, training) and a single step
(generation): both take and return the layer's explicit state, never keep it on the module.
``step_in_place`` is the one exception, named as such: the decode step of a captured CUDA graph
writes the new state into the state's own tensors (the graph's static buffers).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..triton_support import kernels_deferred
from .config import GATE_LOGIT_NORMALIZER, GLAConfig
from .kernels import gla, naive_gla
from .layers import LayerNorm, Linear, SwiGLU, project, share_rows


class GLAState(NamedTuple):
    """Recurrent state of one GLA layer.

    conv_*: [B, C, conv_size] the last projections before the short conv (oldest first),
    or None without short convolutions. S: [B, H, dk, dv] float32.
    """

    conv_q: torch.Tensor | None
    conv_k: torch.Tensor | None
    conv_v: torch.Tensor | None
    S: torch.Tensor


def zero_gla_state(cfg: GLAConfig, batch: int, device=None) -> GLAState:
    def conv(c: int):
        return torch.zeros(batch, c, cfg.conv_size, device=device) if cfg.short_conv else None

    return GLAState(
        conv(cfg.key_dim),
        conv(cfg.key_dim),
        conv(cfg.value_dim),
        torch.zeros(batch, cfg.heads, cfg.head_k, cfg.head_v, device=device),
    )


def causal_conv(x: torch.Tensor, window: torch.Tensor, conv: nn.Conv1d):
    """Depthwise causal conv + SiLU over x [B, T, C], continuing from window [B, C, K].

    Returns the activations [B, T, C] and the new window (last K inputs).
    """
    full = torch.cat([window.to(x.dtype), x.transpose(1, 2)], dim=2)  # (B, C, K + T)
    new_window = full[:, :, -window.shape[2] :]
    if x.shape[1] == 1:  # one step: a dot product per channel (cheaper than conv1d on CPU)
        y = (new_window * conv.weight[:, 0, :].to(x.dtype)).sum(-1, keepdim=True)  # (B, C, 1)
    else:
        y = F.conv1d(full[:, :, 1:], conv.weight.to(x.dtype), groups=full.shape[1])  # (B, C, T)
    return F.silu(y).transpose(1, 2), new_window


class GatedLinearAttention(nn.Module):
    small_batch_gemv = False  # see layers.project()
    fused_step = False  # step_in_place runs the one-kernel Triton step (set by LinaModel.fuse_projections)

    def __init__(self, cfg: GLAConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.q_proj = Linear(d, cfg.key_dim, bias=False)
        self.k_proj = Linear(d, cfg.key_dim, bias=False)
        self.v_proj = Linear(d, cfg.value_dim, bias=False)
        self.g_proj = Linear(d, cfg.value_dim, bias=False)
        self.gk_proj = nn.Sequential(Linear(d, cfg.gate_rank, bias=False), Linear(cfg.gate_rank, cfg.key_dim))
        self.o_proj = Linear(cfg.value_dim, d, bias=False)
        if cfg.short_conv:
            for name, c in (("q_conv1d", cfg.key_dim), ("k_conv1d", cfg.key_dim), ("v_conv1d", cfg.value_dim)):
                setattr(self, name, nn.Conv1d(c, c, cfg.conv_size, groups=c, bias=False))
        self.g_norm_swish_gate = nn.Module()
        self.g_norm_swish_gate.weight = nn.Parameter(torch.ones(cfg.head_v))
        self.register_buffer("fused_in", None, persistent=False)  # see fuse_projections
        # how the recurrence runs (kernels.gla picks by device and length; a check may force the
        # reference with LinaModel.use_recurrence)
        self.recurrence = gla

    @torch.no_grad()
    def fuse_projections(self) -> None:
        """Stack the q/k/v/g weights and the folded low-rank gate (W2 @ W1) into one matrix:
        one GEMM instead of six per step. The gate's bias is added in float32 afterwards.

        An inference-time tensor (not in the state_dict); call again if the weights change. The
        q/k/v/g weights become views of its rows (``layers.share_rows``), so each is held once and
        the folded gate is the only memory added; the state_dict and every reader of those
        weights see the same values as before."""
        projections = (self.q_proj, self.k_proj, self.v_proj, self.g_proj)
        dtype = self.q_proj.weight.dtype
        down, up = self.gk_proj[0].weight.float(), self.gk_proj[1].weight.float()
        gate = (up @ down).to(dtype)  # (key_dim, d): the low-rank gate as one matrix
        self.fused_in = torch.cat([p.weight for p in projections] + [gate])
        share_rows(self.fused_in, [p.weight for p in projections])

    def _projections(self, h: torch.Tensor):
        """q, k, v, output gate, and the decay-gate logits (float32)."""
        if self.fused_in is None:
            gk = self.gk_proj(h).float()
            return self.q_proj(h), self.k_proj(h), self.v_proj(h), self.g_proj(h), gk
        out = project(h, self.fused_in, self.small_batch_gemv)
        c = self.cfg
        q, k, v, g_out, gk = out.split([c.key_dim, c.key_dim, c.value_dim, c.value_dim, c.key_dim], dim=-1)
        gk = gk.float() + self.gk_proj[1].bias.float()
        return q.to(h.dtype), k.to(h.dtype), v.to(h.dtype), g_out.to(h.dtype), gk

    def can_fuse_step(self) -> bool:
        """Whether the one-kernel Triton step can run this layer: fused projections, short convs,
        and head sizes the Triton kernel tiles (powers of two)."""
        c = self.cfg
        return (
            self.fused_in is not None
            and c.short_conv
            and all(n > 0 and n & (n - 1) == 0 for n in (c.head_k, c.head_v, c.conv_size))
        )

    def _fused_step(self, h: torch.Tensor, state: GLAState) -> tuple[torch.Tensor, GLAState]:
        """One frame through ONE Triton kernel between the two GEMMs (model/triton_step.py).
        The conv windows and S of ``state`` are updated in place and returned."""
        from .triton_step import gla_decode_step

        proj = project(h[:, 0], self.fused_in, self.small_batch_gemv)  # (B, 3 key + 2 value)
        o = gla_decode_step(
            proj,
            state.conv_q,
            state.conv_k,
            state.conv_v,
            self.q_conv1d.weight,
            self.k_conv1d.weight,
            self.v_conv1d.weight,
            state.S,
            self.gk_proj[1].bias.float(),
            self.g_norm_swish_gate.weight.float(),
            self.cfg.head_k**-0.5,
            1e-5,
            self.o_proj.weight.dtype,
        )
        return self.o_proj(o[:, None]).to(h.dtype), state

    def step_in_place(self, h: torch.Tensor, state: GLAState) -> torch.Tensor:
        """One frame, h: [B, 1, d] (after norm1) -> out [B, 1, d], writing the new conv windows
        and S INTO ``state``'s tensors. With ``fused_step`` one Triton kernel does it (unless this
        thread defers its kernels: ``triton_support.defer_kernels_here``); otherwise the plain
        recurrence runs and its result is copied in (the captured step's CPU twin)."""
        if self.fused_step and not kernels_deferred():
            return self._fused_step(h, state)[0]
        out, new = self._run(h, state, naive_gla)
        for buf, t in zip(state, new):
            if buf is not None:
                buf.copy_(t)
        return out

    def forward(self, h: torch.Tensor, state: GLAState):
        """h: [B, T, d] (after norm1). Returns out [B, T, d] and the new state."""
        return self._run(h, state, self.recurrence)

    def _run(self, h: torch.Tensor, state: GLAState, recurrence):
        cfg = self.cfg
        B, T, _ = h.shape
        q, k, v, g_out, gk = self._projections(h)
        if cfg.short_conv:
            q, cq = causal_conv(q, state.conv_q, self.q_conv1d)
            k, ck = causal_conv(k, state.conv_k, self.k_conv1d)
            v, cv = causal_conv(v, state.conv_v, self.v_conv1d)
        else:
            cq = ck = cv = None
        g = F.logsigmoid(gk) / GATE_LOGIT_NORMALIZER
        H = cfg.heads
        o, S = recurrence(
            q.view(B, T, H, cfg.head_k),
            k.view(B, T, H, cfg.head_k),
            v.view(B, T, H, cfg.head_v),
            g.view(B, T, H, cfg.head_k),
            state.S,
            scale=cfg.head_k**-0.5,
        )  # o: (B, T, H, dv) float32
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * self.g_norm_swish_gate.weight.float()
        o = o.reshape(B, T, cfg.value_dim) * F.silu(g_out.float())
        return self.o_proj(o.to(h.dtype)), GLAState(cq, ck, cv, S)


class GLABlock(nn.Module):
    """x + GLA(norm1(x)), then x + SwiGLU(norm2(x))."""

    def __init__(self, cfg: GLAConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.d_model)
        self.tmix = GatedLinearAttention(cfg)
        self.norm2 = LayerNorm(cfg.d_model)
        self.cmix = SwiGLU(cfg.d_model, cfg.hidden)

    def forward(self, x: torch.Tensor, state: GLAState):
        y, state = self.tmix(self.norm1(x), state)
        return self._channel_mix(x + y), state

    def step_in_place(self, x: torch.Tensor, state: GLAState) -> torch.Tensor:
        """One frame (x: [B, 1, d]); the new state is written into ``state`` (see
        ``GatedLinearAttention.step_in_place``)."""
        return self._channel_mix(x + self.tmix.step_in_place(self.norm1(x), state))

    def _channel_mix(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cmix(self.norm2(x))
