"""A decode step built for the CPU: ~8-bit group-wise weights, float32 sums, few ops.

A step for one row reads every matrix of the model once (~123M weights) and does little
arithmetic with each: on a CPU it is bound by moving weights and by PyTorch's per-op cost
(``LinaModel.step`` runs ~1,000 small ops). ``QuantizedStep`` therefore

- stores the step's matrices at ~8 bits per weight with a scale and offset per 32 weights
  (``QuantizedMatrix``: two 4-bit planes multiplied by PyTorch's CPU int4 kernel with bfloat16
  activations and float32 sums), made ONCE from the float32 model at start-up, never shipped;
- stacks q/k/v/output gate and the folded low-rank decay gate into one matrix per GLA layer,
  and pads the SwiGLU hidden size so its two halves come out of one product;
- writes the GLA block for one frame as ~40 ops (one conv window for q, k and v together,
  the recurrence as a multiply and two batched matmuls).

Norms, convolutions, the recurrence, the cross-attention and the state stay float32, and the
state keeps ``LinaState``'s layout, so a quantized step can follow a float32 prefill, and
``LinaState.select``/``cat`` work on what it returns. ``docs/cpu.md`` has the measured speed,
the candidates that lost, and how far the logits are from the float32 model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import GATE_LOGIT_NORMALIZER
from .cross_attention import BlindCrossAttention, TextContext
from .gla import GLABlock, GLAState
from .layers import aligned_width
from .lina import LinaModel
from .state import LinaState

GROUP = 32  # weights per scale along K (one scale and offset per 32 weights: the group of llama.cpp's Q8_0)
ACT_DTYPE = torch.bfloat16  # the kernel's activations; it sums in float32


def quantized_kernel_available() -> bool:
    """Whether this PyTorch has the CPU group-wise int4 product (recent releases; 2.13 does)."""
    ops = torch.ops.aten
    return hasattr(ops, "_weight_int4pack_mm_for_cpu") and hasattr(ops, "_convert_weight_to_int4pack_for_cpu")


def _quantize_4bit(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit per group of GROUP along K, in the kernel's convention (value =
    (q - 8) * scale + offset, scale and offset bfloat16): codes [N, K] int32, scales and
    offsets [K / GROUP, N, 2] bfloat16, and the float32 values the codes stand for."""
    n, k = w.shape
    groups = w.reshape(n, k // GROUP, GROUP)
    lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp_min(1e-12).to(ACT_DTYPE).float()
    offset = (lo + 8 * scale).to(ACT_DTYPE).float()
    codes = torch.round((groups - offset) / scale + 8).clamp_(0, 15)
    values = ((codes - 8) * scale + offset).reshape(n, k)
    scales = torch.cat([scale, offset], -1).transpose(0, 1).contiguous().to(ACT_DTYPE)  # (K/GROUP, N, 2)
    return codes.reshape(n, k).to(torch.int32), scales, values


class QuantizedMatrix:
    """A [N, K] float matrix at ~8 bits per weight, group-wise, for PyTorch's CPU int4 kernel.

    The matrix is stored as two 4-bit planes: W ~ Q1 + Q2, Q1 the 4-bit group-wise
    quantization of W and Q2 that of what Q1 left over, so each group of 32 weights spans
    ~225 levels between its own minimum and maximum (per-row int8 spans 255 levels over the
    whole row: on Lina's full-size shapes its logits end ~1.7x as far from float32, and PyTorch's
    per-row int8 kernel is slower). Both planes are one product: the codes sit side by side
    along K ([Q1 | Q2], 2K columns) and the input is repeated ([x, x]), so the kernel adds the
    two in its float32 sums and rounds once. 1.25 bytes per weight with the scales.

    K is padded with zero columns to a multiple of 64 and N with zero rows to a multiple of
    16 (the kernel's tiles); inputs narrower than the padded K are padded on the way in."""

    def __init__(self, weight: torch.Tensor):
        w = weight.detach().float()
        n, k = w.shape
        self.in_features, self.out_features, self.padded_in = k, n, aligned_width(k)
        w = F.pad(w, (0, self.padded_in - k, 0, -n % 16))
        codes1, scales1, values1 = _quantize_4bit(w)
        codes2, scales2, _ = _quantize_4bit(w - values1)
        self.weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.cat([codes1, codes2], 1), 2)
        self.scales = torch.cat([scales1, scales2])  # (2 K / GROUP, N, 2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] (any float dtype) -> x @ W^T [M, N] in bfloat16 (float32 sums)."""
        if x.dtype != ACT_DTYPE:
            x = x.to(ACT_DTYPE)
        if x.shape[-1] != self.padded_in:
            x = F.pad(x, (0, self.padded_in - x.shape[-1]))
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(torch.cat([x, x], -1), self.weight, GROUP, self.scales)
        return y if y.shape[-1] == self.out_features else y[:, : self.out_features]

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * self.weight.element_size() + self.scales.numel() * self.scales.element_size()


class _QuantizedGLABlock:
    """One GLA block (time-mix + SwiGLU) for a single frame, quantized products."""

    def __init__(self, block: GLABlock):
        tmix, cmix = block.tmix, block.cmix
        cfg = tmix.cfg
        if not cfg.short_conv:
            raise ValueError("the quantized CPU step needs the short convolutions (all Lina checkpoints have them)")
        self.cfg = cfg
        self.norm1 = (block.norm1.weight.float(), block.norm1.bias.float(), block.norm1.eps)
        self.norm2 = (block.norm2.weight.float(), block.norm2.bias.float(), block.norm2.eps)
        down, up = tmix.gk_proj[0].weight.float(), tmix.gk_proj[1].weight.float()
        self.proj_in = QuantizedMatrix(
            torch.cat([tmix.q_proj.weight, tmix.k_proj.weight, tmix.v_proj.weight, tmix.g_proj.weight, up @ down])
        )
        self.gate_bias = tmix.gk_proj[1].bias.float()
        # the three depthwise conv filters side by side: one window for q, k and v
        self.conv_weight = torch.cat([tmix.q_conv1d.weight, tmix.k_conv1d.weight, tmix.v_conv1d.weight])[:, 0].float()
        self.norm_weight = tmix.g_norm_swish_gate.weight.float()
        self.proj_out = QuantizedMatrix(tmix.o_proj.weight)
        # SwiGLU: hidden padded with zero rows (gate and value halves alike) to a multiple of 64
        hidden = cmix.p_out.weight.shape[1]
        padded = aligned_width(hidden)
        w_in, b_in = cmix.p_in.weight.float(), cmix.p_in.bias.float()
        halves = [F.pad(w_in[i * hidden : (i + 1) * hidden], (0, 0, 0, padded - hidden)) for i in range(2)]
        self.mlp_in = QuantizedMatrix(torch.cat(halves))
        self.mlp_in_bias = torch.cat(
            [F.pad(b_in[i * hidden : (i + 1) * hidden], (0, padded - hidden)) for i in range(2)]
        )
        self.mlp_out = QuantizedMatrix(F.pad(cmix.p_out.weight.float(), (0, padded - hidden)))
        self.mlp_out_bias = cmix.p_out.bias.float()
        self.hidden = padded

    def __call__(self, x: torch.Tensor, state: GLAState) -> tuple[torch.Tensor, GLAState]:
        """x [B, d] float32 -> x after the block, and the block's new state."""
        c = self.cfg
        B = x.shape[0]
        H, dk, dv = c.heads, c.head_k, c.head_v
        qkv = 2 * c.key_dim + c.value_dim
        proj = self.proj_in(F.layer_norm(x, x.shape[-1:], *self.norm1[:2], self.norm1[2]))  # (B, qkv + dv + dk) bf16
        # causal depthwise conv over the last conv_size inputs of q, k and v, then SiLU
        window = torch.cat([_conv_window(state)[:, :, 1:], proj[:, :qkv, None].float()], dim=2)  # (B, qkv, K)
        y = F.silu((window * self.conv_weight).sum(-1))  # (B, qkv)
        q = y[:, : c.key_dim].reshape(B * H, 1, dk)
        k = y[:, c.key_dim : 2 * c.key_dim].reshape(B * H, dk, 1)
        v = y[:, 2 * c.key_dim : qkv].reshape(B * H, 1, dv)
        decay = F.logsigmoid(torch.add(self.gate_bias, proj[:, qkv + c.value_dim :])).div_(GATE_LOGIT_NORMALIZER).exp_()
        # S = diag(decay) S + k^T v, then o = (q * scale) S: the outer product and the read-out as bmm
        S = torch.baddbmm(state.S.reshape(B * H, dk, dv) * decay.view(B * H, dk, 1), k, v)  # (B H, dk, dv)
        o = torch.bmm(q, S)  # (B H, 1, dv) without the scale dk^-0.5, which the norm below absorbs
        # RMSNorm of scale * o (eps 1e-5) == RMSNorm of o with eps 1e-5 * dk, as scale = dk^-0.5
        o = o * (self.norm_weight * torch.rsqrt(o.pow(2).mean(-1, keepdim=True).add_(1e-5 * dk)))
        o = o.view(B, c.value_dim) * F.silu(proj[:, qkv : qkv + c.value_dim].float())
        x = x + self.proj_out(o)
        # SwiGLU
        u = torch.add(self.mlp_in_bias, self.mlp_in(F.layer_norm(x, x.shape[-1:], *self.norm2[:2], self.norm2[2])))
        hidden = F.silu(u[:, : self.hidden]).mul_(u[:, self.hidden :])
        x = torch.add(x, self.mlp_out(hidden)).add_(self.mlp_out_bias)
        S = S.view(B, H, dk, dv)
        return x, GLAState(window[:, : c.key_dim], window[:, c.key_dim : 2 * c.key_dim], window[:, 2 * c.key_dim :], S)


def _conv_window(state: GLAState) -> torch.Tensor:
    """The q, k and v conv windows as one [B, 2 key + value, K] tensor. The quantized step
    hands out its windows as views of one tensor, so a state it made costs nothing here;
    any other (a float32 prefill, ``LinaState.select``) is stacked once."""
    q, k, v = state.conv_q, state.conv_k, state.conv_v
    base = q._base
    if (
        base is not None
        and k._base is base
        and v._base is base
        and base.shape[1] == q.shape[1] + k.shape[1] + v.shape[1]
        and q.data_ptr() == base.data_ptr()
        and k.data_ptr() == q.data_ptr() + q.shape[1] * q.stride(1) * q.element_size()
        and v.data_ptr() == k.data_ptr() + k.shape[1] * k.stride(1) * k.element_size()
    ):
        return base
    return torch.cat([q, k, v], dim=1).float()


class _QuantizedCrossAttention:
    def __init__(self, cross: BlindCrossAttention, pos_net: _QuantizedGLABlock):
        self.q = QuantizedMatrix(cross.q.weight)
        self.q_bias = cross.q.bias.float()
        self.ln_q = (cross.ln_q.weight.float(), cross.ln_q.bias.float(), cross.ln_q.eps)
        self.pos_net = pos_net

    def __call__(self, y: torch.Tensor, ctx: TextContext, state: GLAState) -> tuple[torch.Tensor, GLAState]:
        """y [B, d] -> the cross-attention output [B, d] (float32) and the pos_net state."""
        q = F.layer_norm(torch.add(self.q_bias, self.q(y)), self.q_bias.shape, self.ln_q[0], self.ln_q[1], self.ln_q[2])
        hidden = ~ctx.mask[:, None, :]  # (B, 1, N): padding of shorter texts
        dtype = ctx.keys.dtype
        scores = torch.matmul(q[:, None].to(dtype), ctx.keys.transpose(1, 2)).float() * q.shape[-1] ** -0.5
        content = torch.softmax(scores.masked_fill_(hidden, float("-inf")), dim=-1)  # (B, 1, N)
        z, state = self.pos_net(torch.matmul(content.to(dtype), ctx.positions)[:, 0].float(), state)  # (B, d_blind)
        scores = torch.matmul(z[:, None].to(dtype), ctx.positions.transpose(1, 2)).float() * z.shape[-1] ** -0.5
        where = torch.softmax(scores.masked_fill_(hidden, float("-inf")), dim=-1)
        return torch.matmul(where.to(dtype), ctx.values)[:, 0].float(), state


class QuantizedStep:
    """``LinaModel.step`` with quantized matrices, for the CPU. Built once from a float32 model
    (a few seconds for the full-size model); the model itself is not changed and keeps doing
    everything else (text encoding, prompt prefill) in float32.

    ``step(ctx, tokens, state) -> (logits [B, V] float32, new state)``, the same contract as
    ``LinaModel.step``: the state passed in is not modified."""

    def __init__(self, model: LinaModel):
        if not quantized_kernel_available():
            raise RuntimeError(f"PyTorch {torch.__version__} has no CPU int4 weight kernel: use float32 on this CPU")
        if model.device.type != "cpu":
            raise ValueError(f"the quantized step runs on the CPU, the model is on {model.device}")
        self.config = model.config
        with torch.no_grad():
            rnn = model.attentive_rnn
            self.encoder = [_QuantizedGLABlock(b) for b in rnn.encoder]
            self.decoder = [_QuantizedGLABlock(b) for b in rnn.decoder]
            self.cross = _QuantizedCrossAttention(rnn.cross_att, _QuantizedGLABlock(rnn.cross_att.pos_net))
            self.embed = model.rvq_embed.weight[0].detach().float()
            self.head = QuantizedMatrix(model.logits_head.weight[0])

    def weight_bytes(self) -> int:
        """Bytes of quantized weights and scales one step reads."""
        mats = [self.head, self.cross.q]
        for b in (*self.encoder, *self.decoder, self.cross.pos_net):
            mats += [b.proj_in, b.proj_out, b.mlp_in, b.mlp_out]
        return sum(m.nbytes for m in mats)

    @torch.inference_mode()
    def step(self, ctx: TextContext, tokens: torch.Tensor, state: LinaState) -> tuple[torch.Tensor, LinaState]:
        """One frame for every row: tokens [B] -> logits [B, V] (float32), new state."""
        n = len(self.encoder)
        layers = list(state.layers)
        x = F.embedding(tokens, self.embed)  # (B, d)
        for i, block in enumerate(self.encoder):
            x, layers[i] = block(x, state.layers[i])
        c, layers[2 * n] = self.cross(x, ctx, state.layers[2 * n])
        x = x + c
        for i, block in enumerate(self.decoder):
            x, layers[n + i] = block(x, state.layers[n + i])
        return self.head(x).float(), LinaState(layers)
