"""Blind cross-attention: how each audio frame finds its place in the text.

Content attention (audio query vs text keys) reads *position* vectors; a recurrent GLA
block (pos_net) smooths that position over audio time; a second attention from the
smoothed position to the text positions reads the text *values*. Everything that depends
only on the text (K, V, P) is computed once per request in ``TextContext``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import LinaConfig
from .gla import GLABlock, GLAState
from .layers import LayerNorm, Linear


@dataclass
class TextContext:
    """Per-request text tensors for the cross-attention.

    keys/values: [B, N, att_dim]; positions: [B, N, d_blind]; mask: [B, N] (True = real token).
    Rows of different text lengths are right-padded; the mask keeps padding out of both
    softmaxes, so a row attends exactly as it would alone.
    """

    keys: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor
    mask: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)

    def select(self, rows) -> TextContext:
        return TextContext(self.keys[rows], self.values[rows], self.positions[rows], self.mask[rows])

    @staticmethod
    def cat(contexts: list[TextContext]) -> TextContext:
        """Stack contexts of different text lengths (padding to the longest)."""
        n = max(c.mask.shape[1] for c in contexts)

        def pad(t: torch.Tensor) -> torch.Tensor:
            return F.pad(t, (0, 0, 0, n - t.shape[1])) if t.dim() == 3 else F.pad(t, (0, n - t.shape[1]))

        return TextContext(
            *(torch.cat([pad(getattr(c, f)) for c in contexts]) for f in ("keys", "values", "positions", "mask"))
        )


class ConvPositions(nn.Module):
    """Position vectors: a learned table smoothed by a depthwise conv along the text."""

    def __init__(self, max_len: int, d_blind: int, kernel: int):
        super().__init__()
        self.embed = nn.Embedding(max_len, d_blind)
        self.dw_conv = nn.Conv1d(d_blind, d_blind, kernel, groups=d_blind, padding="same")

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """mask: [B, N] -> [B, N, d_blind]; rows beyond a text's length are zero before the
        conv, exactly like the zero 'same' padding of a text encoded alone."""
        n = mask.shape[1]
        table = self.embed.weight[:n].float() * mask[:, :, None]  # (B, N, d_blind)
        w, b = self.dw_conv.weight.float(), self.dw_conv.bias.float()
        return F.conv1d(table.transpose(1, 2), w, b, padding="same", groups=table.shape[2]).transpose(1, 2)


class BlindCrossAttention(nn.Module):
    def __init__(self, cfg: LinaConfig):
        super().__init__()
        d, a = cfg.d_model, cfg.att_dim
        self.q, self.k, self.v = Linear(d, a), Linear(d, a), Linear(d, a)
        self.ln_q, self.ln_k, self.ln_v = LayerNorm(a), LayerNorm(a), LayerNorm(a)
        self.pos_embed = ConvPositions(cfg.max_text_len, cfg.d_blind, cfg.pos_kernel)
        self.pos_net = GLABlock(cfg.pos_net)

    def text_context(self, text: torch.Tensor, mask: torch.Tensor) -> TextContext:
        """text: [B, N, d] encoder output; mask: [B, N]. Keys, values and positions are kept in
        the weights' dtype (bf16 on a GPU): a decode step reads all three for every row, which
        at batch 256 is hundreds of MB per frame in float32."""
        dtype = self.k.weight.dtype
        keys = self.ln_k(self.k(text)).to(dtype)
        values = self.ln_v(self.v(text)).to(dtype)
        return TextContext(keys, values, self.pos_embed(mask).to(dtype), mask)

    def forward(self, y: torch.Tensor, ctx: TextContext, state: GLAState):
        """y: [B, T, d] audio hidden states. Returns the cross-attention output and pos_net state.
        Products run in the context's dtype (bf16 on a GPU, like every other product of the step:
        scores carry bf16 rounding); the scaling, masking and softmaxes run in float32."""
        bias = _mask_bias(ctx)
        z, state = self.pos_net(self._attend_positions(y, ctx, bias), state)  # (B, T, d_blind)
        return self._read_values(z, ctx, bias, y.dtype), state

    def step_in_place(self, y: torch.Tensor, ctx: TextContext, state: GLAState) -> torch.Tensor:
        """One frame (y: [B, 1, d]); the pos_net state is written into ``state``."""
        bias = _mask_bias(ctx)
        z = self.pos_net.step_in_place(self._attend_positions(y, ctx, bias), state)
        return self._read_values(z, ctx, bias, y.dtype)

    def _attend_positions(self, y: torch.Tensor, ctx: TextContext, bias: torch.Tensor) -> torch.Tensor:
        """Content attention over the text, reading position vectors: [B, T, d_blind]."""
        dtype = ctx.keys.dtype
        q = self.ln_q(self.q(y))  # (B, T, a)
        scores = (q.to(dtype) @ ctx.keys.transpose(1, 2)).float() * q.shape[-1] ** -0.5 + bias
        return (torch.softmax(scores, dim=-1).to(dtype) @ ctx.positions).to(y.dtype)

    @staticmethod
    def _read_values(z: torch.Tensor, ctx: TextContext, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Position attention over the text, reading its values: [B, T, d]."""
        scores = (z.to(ctx.keys.dtype) @ ctx.positions.transpose(1, 2)).float() * z.shape[-1] ** -0.5 + bias
        return (torch.softmax(scores, dim=-1).to(ctx.keys.dtype) @ ctx.values).to(dtype)


def _mask_bias(ctx: TextContext) -> torch.Tensor:
    """[B, 1, N]: 0 over the text, -inf over padding."""
    return torch.zeros(ctx.mask.shape, device=ctx.mask.device).masked_fill(~ctx.mask, float("-inf"))[:, None, :]
