"""The Vocos backbone that turns codebook rows into spectrogram features.

    x = embed(f)                       conv k7, codebook rows (B, T, 512) -> (B, T, 768)
    x = pos_net(x)                     ResnetBlock x2, AttnBlock, ResnetBlock x2, GroupNorm
    x = AdaLN(x, bid)                  layer_norm with scale[bid], shift[bid] as its affine
    x = ConvNeXt(x, bid) x num_layers
    x = final_layer_norm(x)            -> (B, T, 768)

Everything runs in (B, T, C), time-major like the codebook rows it starts from: the convs as
1 x k 2-D convs on the channels-last view (cuDNN's tensor-core kernels want that layout and
otherwise transform input, weight and output on every call), the GroupNorms by Triton
kernels on CUDA (``triton_groupnorm.py``), the depthwise convs likewise (``triton_dwconv.py``).
The upstream modules (Conv1d over (B, C, T)) keep their parameters and names.

Not causal: the attention block and the ten GroupNorms see the whole sequence, which is
why streaming needs windows (see ``streaming.py``). ``bid`` (the bandwidth id) is one int
per batch and selects the AdaLN rows. Module names and registration order reproduce the
upstream ``state_dict`` (``pos_net`` comes last).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..triton_support import triton_available

EPS = 1e-6


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=EPS, affine=True)


def group_norm_over_time(x: torch.Tensor, norm: nn.GroupNorm, silu: bool = False) -> torch.Tensor:
    """GroupNorm (then SiLU if ``silu``) of x (B, T, C) over time and each group's channels.

    On CUDA two Triton kernels that read (B, T, C) in place (``triton_groupnorm.py``); elsewhere
    ``F.group_norm`` on the transposed view (its naive twin)."""
    if x.is_cuda and triton_available():
        from .triton_groupnorm import group_norm_time

        return group_norm_time(x, norm.num_groups, norm.weight, norm.bias, norm.eps, silu)
    y = F.group_norm(x.transpose(1, 2), norm.num_groups, norm.weight, norm.bias, norm.eps).transpose(1, 2)
    return F.silu(y) if silu else y


def conv_over_time(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A 'same' Conv1d over time applied to x (B, T, C_in) -> (B, T, C_out), without leaving
    the layout: (B, T, C) memory is the channels-last layout of (B, C, 1, T), so it runs as a
    1 x k 2-D conv on that view (with the weight in the matching layout, ``conv_weight``)."""
    x4 = x.transpose(1, 2).unsqueeze(2)  # (B, C, 1, T) view
    if x4.is_contiguous(memory_format=torch.channels_last):
        weight = conv_weight(conv)
    else:  # (CPU twin of a transposed GroupNorm output) plain NCHW
        weight = conv.weight.unsqueeze(2)
    y = F.conv2d(x4, weight, conv.bias, padding=(0, conv.padding[0]), groups=conv.groups)
    return y.squeeze(2).transpose(1, 2).contiguous()  # no copy when y came out channels-last


def conv_weight(conv: nn.Conv1d) -> torch.Tensor:
    """The conv's weight as (C_out, C_in, 1, k) channels-last: a view of the weight itself once
    ``cache_conv_weights`` stored it in that layout (inference), else converted for this call."""
    return conv.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (no copy if it is)


class ResnetBlock(nn.Module):
    """x + conv2(silu(gn2(conv1(silu(gn1(x)))))), convs k3 zero-padded (dropout: eval no-op)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.norm2 = group_norm(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x):  # (B, T, C)
        h = conv_over_time(group_norm_over_time(x, self.norm1, silu=True), self.conv1)
        h = conv_over_time(group_norm_over_time(h, self.norm2, silu=True), self.conv2)
        return x + h


def pointwise(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A 1x1 Conv1d on (B, T, C): a linear layer over channels."""
    return F.linear(x, conv.weight.squeeze(-1), conv.bias)


class AttnBlock(nn.Module):
    """Single-head self-attention over all frames, 1x1-conv projections, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv1d(channels, channels, 1)
        self.k = nn.Conv1d(channels, channels, 1)
        self.v = nn.Conv1d(channels, channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x):  # (B, T, C)
        h = group_norm_over_time(x, self.norm)
        q, k, v = pointwise(h, self.q), pointwise(h, self.k), pointwise(h, self.v)  # (B, T, C) each
        scores = torch.bmm(q, k.transpose(1, 2)) * q.shape[2] ** -0.5  # (B, Tq, Tk)
        attn = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        return x + pointwise(torch.bmm(attn, v), self.proj_out)


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine, then a per-bandwidth-id scale and shift (nn.Embedding tables)."""

    def __init__(self, num_embeddings: int, dim: int):
        super().__init__()
        self.dim = dim
        self.scale = nn.Embedding(num_embeddings, dim)
        self.shift = nn.Embedding(num_embeddings, dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x, bid: int):  # (B, T, C)
        # the scale and shift as layer_norm's affine: one kernel instead of three on a GPU
        return F.layer_norm(x, (self.dim,), self.scale.weight[bid], self.shift.weight[bid], eps=EPS)


def depthwise_conv_over_time(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A depthwise 'same' Conv1d over time applied to x (B, T, C) without leaving that layout.

    On CUDA one Triton kernel (``triton_dwconv.py``): PyTorch's depthwise Conv1d wants (B, C, T)
    and runs a generic bf16 kernel, which with the transposed copies around it was ~45% of a
    decode's kernel time. Elsewhere, (B, T, C) memory being the channels-last layout of
    (B, C, 1, T), it runs as a 1 x k 2-D conv on that view (the naive twin)."""
    if x.is_cuda and triton_available():
        from .triton_dwconv import depthwise_conv_time

        return depthwise_conv_time(x, conv.weight, conv.bias, conv.padding[0])
    return conv_over_time(x, conv)


class ConvNeXtBlock(nn.Module):
    """x + gamma * pw2(gelu(pw1(AdaLN(dwconv7(x), bid)))), exact (erf) GELU; x is (B, T, C)."""

    def __init__(self, dim: int, intermediate_dim: int, num_embeddings: int, layer_scale: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = AdaLayerNorm(num_embeddings, dim)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)

    @torch.no_grad()
    def fold_layer_scale(self) -> None:
        """gamma * pw2(h) = h @ (gamma W)^T + gamma b: fold gamma into pw2, so a decode skips one
        elementwise pass over (B, T, C) per block (same result up to rounding). In place, so the
        weights are held once: pw2 then holds gamma W and gamma b and gamma is all ones, the same
        function of the input (the state_dict has the folded values under the same names, and
        folding again changes nothing). Weights loaded afterwards need this called again."""
        gamma = self.gamma.float()
        self.pwconv2.weight.copy_(self.pwconv2.weight.float() * gamma[:, None])
        self.pwconv2.bias.copy_(self.pwconv2.bias.float() * gamma)
        self.gamma.fill_(1.0)
        self.layer_scale_folded = True

    layer_scale_folded = False  # gamma is in pw2 (fold_layer_scale): the product by it is skipped

    def forward(self, x, bid: int):  # (B, T, C)
        h = depthwise_conv_over_time(x, self.dwconv)
        h = F.gelu(self.pwconv1(self.norm(h, bid)))
        if self.layer_scale_folded:
            return x + self.pwconv2(h)
        return x + self.gamma * self.pwconv2(h)


class VocosBackbone(nn.Module):
    """(B, input_channels, T) features, int bandwidth id -> (B, T, dim)."""

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int, num_embeddings: int):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, 7, padding=3)
        self.norm = AdaLayerNorm(num_embeddings, dim)
        scale = 1.0 / max(num_layers, 1)
        self.convnext = nn.ModuleList(
            [ConvNeXtBlock(dim, intermediate_dim, num_embeddings, scale) for _ in range(num_layers)]
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=EPS)
        self.pos_net = nn.Sequential(
            ResnetBlock(dim), ResnetBlock(dim), AttnBlock(dim), ResnetBlock(dim), ResnetBlock(dim), group_norm(dim)
        )

    def fold_layer_scales(self) -> None:
        for block in self.convnext:
            block.fold_layer_scale()

    @torch.no_grad()
    def cache_conv_weights(self) -> None:
        """Store each dense conv's weight in the layout its calls use (inference): the weight
        itself, same values and shape, so it is held once and ``conv_weight`` is a view of it.
        Channels-last where the input comes channels-last: always for ``embed``, for the
        ``pos_net`` convs behind the Triton GroupNorm (CUDA); behind the CPU's GroupNorm their
        input is plain NCHW, and a channels-last weight would make PyTorch switch the conv's
        layout (other rounding), so those stay as they are. Kept through ``to(dtype)``,
        ``load_state_dict`` and the state_dict; call again if a weight is assigned anew."""
        behind_kernel = self.embed.weight.is_cuda and triton_available()  # (group_norm_over_time's test)
        for conv in [self.embed] + [
            m for m in self.pos_net.modules() if isinstance(m, nn.Conv1d) and m.kernel_size[0] > 1
        ]:
            if conv is self.embed or behind_kernel:
                conv.weight.data = conv_weight(conv).squeeze(2)

    def forward(self, x: torch.Tensor, bid: int = 0) -> torch.Tensor:
        """x: (B, input_channels, T), the transposed view of time-major codebook rows."""
        x = conv_over_time(x.transpose(1, 2), self.embed)  # (B, T, dim) from here on
        for block in self.pos_net[:-1]:
            x = block(x)
        x = self.norm(group_norm_over_time(x, self.pos_net[-1]), bid)
        for block in self.convnext:
            x = block(x, bid)
        return self.final_layer_norm(x)
