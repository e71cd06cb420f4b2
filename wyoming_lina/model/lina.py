"""The Lina-Speech codec language model.

Text -> text encoder -> (keys, values, positions) once per request. Audio tokens ->
GLA encoder stack -> blind cross-attention -> GLA decoder stack -> logits over codec
tokens (code c is token c + 3; PAD 0, BOS 1, EOS 2). ``forward_audio`` runs a whole token
sequence in parallel (prompt prefill, training); ``step`` runs one frame. Both take and
return an explicit ``LinaState``, so one model serves any number of utterances.
``step_in_place`` is the decode step of a captured CUDA graph: the same frame, with the new
state written into the given state's tensors (the graph's static buffers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..triton_support import triton_available
from .config import LinaConfig
from .cross_attention import BlindCrossAttention, TextContext
from .gla import GatedLinearAttention, GLABlock
from .kernels import gla
from .layers import GEMV_MAX_ROWS, aligned_width, project, share_rows
from .state import InitialState, LinaState, initial_lina_state
from .text_encoder import TextEncoder


def fused_kernels_apply(device_type: str) -> bool:
    """Whether the model's Triton kernels (one-kernel GLA step, small-batch GEMV) run on this
    device: CUDA, with Triton passing its start-up check (``triton_support``)."""
    return device_type == "cuda" and triton_available()


class AttentiveRNN(nn.Module):
    def __init__(self, cfg: LinaConfig):
        super().__init__()
        self.encoder = nn.ModuleList(GLABlock(cfg.gla) for _ in range(cfg.n_layer))
        self.decoder = nn.ModuleList(GLABlock(cfg.gla) for _ in range(cfg.n_layer))
        self.cross_att = BlindCrossAttention(cfg)

    def forward(self, x: torch.Tensor, ctx: TextContext, state: LinaState):
        """x: [B, T, d] embedded audio tokens -> hidden [B, T, d] and the new state."""
        x, state = self.encode(x, state)
        return self.attend_and_decode(x, ctx, state)

    def encode(self, x: torch.Tensor, state: LinaState):
        """The encoder blocks: they see only audio (no text), so a voice prompt's pass is reusable."""
        new = list(state.layers)
        for i, block in enumerate(self.encoder):
            x, new[i] = block(x, state.layers[i])
        return x, LinaState(new)

    def attend_and_decode(self, x: torch.Tensor, ctx: TextContext, state: LinaState):
        """Cross-attention to the text, then the decoder blocks."""
        n = len(self.encoder)
        new = list(state.layers)
        c, new[2 * n] = self.cross_att(x, ctx, state.layers[2 * n])
        x = x + c
        for i, block in enumerate(self.decoder):
            x, new[n + i] = block(x, state.layers[n + i])
        return x, LinaState(new)

    def step_in_place(self, x: torch.Tensor, ctx: TextContext, state: LinaState) -> torch.Tensor:
        """``forward`` for one frame (x: [B, 1, d]) writing every layer's new state into ``state``."""
        n = len(self.encoder)
        for i, block in enumerate(self.encoder):
            x = block.step_in_place(x, state.layers[i])
        x = x + self.cross_att.step_in_place(x, ctx, state.layers[2 * n])
        for i, block in enumerate(self.decoder):
            x = block.step_in_place(x, state.layers[n + i])
        return x


class _Weight(nn.Module):
    """Holds a bare ``weight`` so state_dict names match upstream (``rvq_embed.weight``)."""

    def __init__(self, *shape: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(*shape))


class LinaModel(nn.Module):
    def __init__(self, cfg: LinaConfig):
        super().__init__()
        self.config = cfg
        d = cfg.d_model
        self.txt_embed = nn.Embedding(cfg.text_vocab, d)
        self.txt_encoder = TextEncoder(d, cfg.text_heads, cfg.text_layers, cfg.text_hidden)
        self.rvq_embed = _Weight(1, cfg.audio_vocab, d)
        self.logits_head = _Weight(1, cfg.out_vocab, d)
        self.attentive_rnn = AttentiveRNN(cfg)
        self.register_buffer("padded_head", None, persistent=False)  # see fuse_projections

    small_batch_gemv = False  # see layers.project()

    def fuse_projections(self, small_batch_gemv: bool | None = None, fused_step: bool | None = None) -> LinaModel:
        """Inference speed-ups (same results up to float rounding): every GLA layer computes
        q/k/v/g with one GEMM, the MLP hidden size is padded for aligned GEMMs, and on CUDA
        (``small_batch_gemv=None``: when Triton is there) products of a few rows use the Triton GEMV
        kernel where it beats cuBLAS (``layers.gemv_wins``). On CUDA with Triton (``fused_step=None``)
        ``step_in_place`` runs each GLA layer the Triton step can take (``can_fuse_step``) as ONE
        kernel (model/triton_step.py). The logits head's 4099 rows are padded
        with zero rows to a multiple of 64 for the batches the GEMV does not take: for the odd width
        cuBLAS has only an unaligned kernel (30 us per step at batch 256 on an H200). Inference-time
        tensors (not in the state_dict); call again if the weights change. The weights they are
        built from become views of them (``layers.share_rows``), so every weight is held once."""
        with torch.no_grad():
            head = self.logits_head.weight[0]
            self.padded_head = torch.cat(
                [head, head.new_zeros(aligned_width(head.shape[0]) - head.shape[0], head.shape[1])]
            )
            share_rows(self.padded_head, [self.logits_head.weight])
        cuda_triton = fused_kernels_apply(self.device.type)
        small_batch_gemv = cuda_triton if small_batch_gemv is None else small_batch_gemv
        fused_step = cuda_triton if fused_step is None else fused_step
        for module in self.modules():
            if hasattr(module, "fuse_projections") and module is not self:
                module.fuse_projections()
            if hasattr(module, "small_batch_gemv"):
                module.small_batch_gemv = small_batch_gemv
        for module in self.modules():
            if isinstance(module, GatedLinearAttention):
                module.fused_step = fused_step and module.can_fuse_step()
        return self

    def use_recurrence(self, recurrence=gla) -> LinaModel:
        """How every GLA layer runs its recurrence over sequences: ``kernels.gla`` (default: picks
        FLA's kernels on CUDA, the chunked plain-PyTorch form elsewhere) or ``kernels.naive_gla``
        (the per-frame reference, for checks)."""
        for module in self.modules():
            if isinstance(module, GatedLinearAttention):
                module.recurrence = recurrence
        return self

    @property
    def device(self) -> torch.device:
        return self.txt_embed.weight.device

    # --- text -------------------------------------------------------------------------
    def text_encoder_output(self, text_ids: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """text_ids [B, N] -> [B, N, d] (padding excluded from attention by text_mask)."""
        if text_ids.shape[1] > self.config.max_text_len:
            raise ValueError(f"text of {text_ids.shape[1]} tokens exceeds the model's {self.config.max_text_len}")
        x = F.embedding(text_ids, self.txt_embed.weight).float()
        return self.txt_encoder(x, text_mask)

    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor | None = None) -> TextContext:
        """Everything the cross-attention needs from the text, computed once per request."""
        if text_mask is None:
            text_mask = torch.ones_like(text_ids, dtype=torch.bool)
        out = self.text_encoder_output(text_ids, text_mask)
        return self.attentive_rnn.cross_att.text_context(out, text_mask)

    # --- audio ------------------------------------------------------------------------
    def init_state(self, batch: int, initial_state: InitialState | None = None) -> LinaState:
        return initial_lina_state(self.config, batch, initial_state, self.device)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.padded_head is None or torch.is_grad_enabled():
            return project(hidden, self.logits_head.weight[0], self.small_batch_gemv).float()
        vocab = self.config.out_vocab  # (the head's rows of padded_head: the weight's own memory)
        if hidden.numel() // hidden.shape[-1] <= GEMV_MAX_ROWS:
            return project(hidden, self.padded_head[:vocab], self.small_batch_gemv).float()
        return project(hidden, self.padded_head, self.small_batch_gemv)[..., :vocab].float()

    def forward_audio(self, ctx: TextContext, audio_ids: torch.Tensor, state: LinaState):
        """Parallel pass: audio_ids [B, T] (BOS-first token ids) -> logits [B, T, V], new state.

        logits[:, t] predicts the token after audio_ids[:, t]."""
        x = F.embedding(audio_ids, self.rvq_embed.weight[0]).float()
        hidden, state = self.attentive_rnn(x, ctx, state)
        return self.logits(hidden), state

    def encode_audio(self, audio_ids: torch.Tensor, state: LinaState):
        """The text-independent half of ``forward_audio``: audio_ids [B, T] -> encoder output
        [B, T, d] and the state with the encoder layers advanced. A prompt voice's result serves
        every text it is used with (``prefill_from_encoded``)."""
        x = F.embedding(audio_ids, self.rvq_embed.weight[0]).float()
        return self.attentive_rnn.encode(x, state)

    def prefill_from_encoded(self, ctx: TextContext, encoded: torch.Tensor, state: LinaState):
        """The rest of a prompt prefill: the state after the prompt (no logits are computed)."""
        _, state = self.attentive_rnn.attend_and_decode(encoded, ctx, state)
        return state

    def step(self, ctx: TextContext, tokens: torch.Tensor, state: LinaState):
        """One frame for every row: tokens [B] -> logits [B, V], new state."""
        logits, state = self.forward_audio(ctx, tokens[:, None], state)
        return logits[:, 0], state

    def step_in_place(self, ctx: TextContext, tokens: torch.Tensor, state: LinaState) -> torch.Tensor:
        """``step`` with the new state written INTO ``state``'s tensors (the static buffers of a
        captured CUDA graph: no pass copies the [B, H, dk, dv] states, which dominate the memory
        traffic at large batch). Returns logits [B, V]."""
        x = F.embedding(tokens[:, None], self.rvq_embed.weight[0]).float()
        return self.logits(self.attentive_rnn.step_in_place(x, ctx, state))[:, 0]

    def teacher_forced_logits(
        self,
        text_ids: torch.Tensor,
        audio_ids: torch.Tensor,
        initial_state: InitialState | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The training-style pass: logits [B, T, V] for audio_ids [B, T] (BOS first, codes + 3)."""
        ctx = self.encode_text(text_ids, text_mask)
        logits, _ = self.forward_audio(ctx, audio_ids, self.init_state(text_ids.shape[0], initial_state))
        return logits
