"""Lina model configuration, derived from checkpoint tensor shapes.

The published checkpoint's constructor arguments are not documented, so every size is
read off the tensors themselves (table in ``shared/spec/lina-model.md``); nothing here is
tuned to one particular checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import CheckpointError

GATE_LOGIT_NORMALIZER = 16  # upstream constant: log decay = logsigmoid(gk) / 16
PAD, BOS, EOS = 0, 1, 2
N_SPECIAL_AUDIO = 3  # codec code c is token c + 3


@dataclass(frozen=True)
class GLAConfig:
    """Sizes of one gated-linear-attention mixing block."""

    d_model: int
    key_dim: int
    value_dim: int
    heads: int
    hidden: int  # SwiGLU hidden size
    gate_rank: int  # low-rank size of gk_proj
    short_conv: bool
    conv_size: int = 4

    @property
    def head_k(self) -> int:
        return self.key_dim // self.heads

    @property
    def head_v(self) -> int:
        return self.value_dim // self.heads


@dataclass(frozen=True)
class LinaConfig:
    d_model: int
    n_layer: int  # GLA blocks before (and again after) the cross-attention
    gla: GLAConfig  # encoder/decoder blocks
    pos_net: GLAConfig  # the cross-attention's own GLA block (width d_blind)
    text_vocab: int
    text_layers: int
    text_heads: int
    text_hidden: int
    att_dim: int  # cross-attention q/k/v width
    d_blind: int
    max_text_len: int  # rows of the position table
    pos_kernel: int  # depthwise conv kernel over text positions
    audio_vocab: int  # input rows of rvq_embed (codes + 3 specials)
    out_vocab: int  # logits

    @property
    def n_codes(self) -> int:
        return self.out_vocab - N_SPECIAL_AUDIO

    @property
    def n_gla_layers(self) -> int:
        """Recurrent layers with state: encoder, decoder, then pos_net (index 2n)."""
        return 2 * self.n_layer + 1


def _shape(sd: dict[str, torch.Tensor], key: str) -> torch.Size:
    if key not in sd:
        raise CheckpointError(f"checkpoint has no tensor {key!r}: not a Lina-Speech checkpoint?")
    return sd[key].shape


def _gla_config(sd: dict[str, torch.Tensor], prefix: str) -> GLAConfig:
    t = prefix + "tmix."
    d_model = _shape(sd, t + "q_proj.weight")[1]
    value_dim = _shape(sd, t + "v_proj.weight")[0]
    head_v = _shape(sd, t + "g_norm_swish_gate.weight")[0]
    if value_dim % head_v:
        raise CheckpointError(f"{t}g_norm_swish_gate.weight size {head_v} does not divide value dim {value_dim}")
    return GLAConfig(
        d_model=d_model,
        key_dim=_shape(sd, t + "q_proj.weight")[0],
        value_dim=value_dim,
        heads=value_dim // head_v,
        hidden=_shape(sd, prefix + "cmix.p_out.weight")[1],
        gate_rank=_shape(sd, t + "gk_proj.0.weight")[0],
        short_conv=(t + "q_conv1d.weight") in sd,
        conv_size=_shape(sd, t + "q_conv1d.weight")[-1] if (t + "q_conv1d.weight") in sd else 4,
    )


def _count(sd: dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def config_from_state_dict(sd: dict[str, torch.Tensor]) -> LinaConfig:
    """Read every size from the tensors (keys without the ``model.`` prefix)."""
    d_model = _shape(sd, "txt_embed.weight")[1]
    n_layer = _count(sd, r"attentive_rnn\.encoder\.(\d+)\.")
    n_dec = _count(sd, r"attentive_rnn\.decoder\.(\d+)\.")
    text_layers = _count(sd, r"txt_encoder\.sa\.(\d+)\.")
    if n_layer == 0 or text_layers == 0:
        raise CheckpointError("checkpoint has no attentive_rnn.encoder / txt_encoder blocks: not a Lina checkpoint?")
    if n_dec != n_layer:
        raise CheckpointError(f"checkpoint has {n_layer} encoder but {n_dec} decoder GLA blocks")
    rvq = _shape(sd, "rvq_embed.weight")
    head = _shape(sd, "logits_head.weight")
    if rvq[0] != 1 or head[0] != 1:
        raise CheckpointError(f"only one quantizer level is supported, checkpoint has {rvq[0]}")
    n_freqs = _shape(sd, "txt_encoder.sa.0.tmix.rotary.freqs")[0]
    pos_embed = _shape(sd, "attentive_rnn.cross_att.pos_embed.embed.weight")
    return LinaConfig(
        d_model=d_model,
        n_layer=n_layer,
        gla=_gla_config(sd, "attentive_rnn.encoder.0."),
        pos_net=_gla_config(sd, "attentive_rnn.cross_att.pos_net."),
        text_vocab=_shape(sd, "txt_embed.weight")[0],
        text_layers=text_layers,
        text_heads=d_model // (4 * n_freqs),
        text_hidden=_shape(sd, "txt_encoder.sa.0.cmix.p_out.weight")[1],
        att_dim=_shape(sd, "attentive_rnn.cross_att.q.weight")[0],
        d_blind=pos_embed[1],
        max_text_len=pos_embed[0],
        pos_kernel=_shape(sd, "attentive_rnn.cross_att.pos_embed.dw_conv.weight")[-1],
        audio_vocab=rvq[1],
        out_vocab=head[1],
    )


def check_hyper_parameters(config: LinaConfig, hparams: dict) -> list[str]:
    """Compare shape-derived sizes with Lightning ``hyper_parameters``; return the mismatches."""
    rnn = (hparams.get("attentive_rnn") or {}).get("init_args", {}) if isinstance(hparams, dict) else {}
    txt = (hparams.get("txt_encoder") or {}).get("init_args", {}) if isinstance(hparams, dict) else {}
    expected = {
        "d_model": (hparams.get("d_model"), config.d_model),
        "attentive_rnn.n_layer": (rnn.get("n_layer"), config.n_layer),
        "attentive_rnn.heads": (rnn.get("heads"), config.gla.heads),
        "attentive_rnn.d_blind": (rnn.get("d_blind"), config.d_blind),
        "attentive_rnn.use_short_conv": (rnn.get("use_short_conv"), config.gla.short_conv),
        "attentive_rnn.expand_k": (rnn.get("expand_k"), config.gla.key_dim / config.d_model),
        "attentive_rnn.expand_v": (rnn.get("expand_v"), config.gla.value_dim / config.d_model),
        "txt_encoder.heads": (txt.get("heads"), config.text_heads),
        "txt_encoder.n_layers": (txt.get("n_layers"), config.text_layers),
        "n_codebook": (hparams.get("n_codebook"), config.n_codes),
    }
    return [
        f"{name}: hyper_parameters say {said!r}, tensors say {derived!r}"
        for name, (said, derived) in expected.items()
        if said is not None and said != derived
    ]
