"""SEANet encoder (audio -> 512-dim frames at 75 Hz) and the unused SEANet decoder.

The encoder is the EnCodec-style stack: conv k7, then per ratio (2, 4, 5, 8: the yaml's
``dowmsamples`` reversed) a residual block and a strided conv that doubles the channels,
a 2-layer LSTM with a skip, ELU and a final conv to ``dimension``. Layer indices in
``self.model`` (ELUs included) reproduce the upstream key names ``model.{i}``.

WavTokenizer decodes with its Vocos backbone, never with the SEANet decoder, but the
published checkpoint contains the decoder's 62 tensors; ``SEANetDecoder`` builds the same
parameters (names and shapes) so the checkpoint loads strictly. It has no forward.
"""

from __future__ import annotations

from torch import nn

from .sconv import SConv1d, SConvTranspose1d

DECODER_RATIOS = (8, 5, 4, 2)  # upstream hard-codes these for the SEANet decoder


class ResidualBlock(nn.Module):
    """x + block(x) with a k1 conv shortcut: ELU, conv k3 (C -> C/2), ELU, conv k1 (C/2 -> C)."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = channels // 2  # compress = 2
        self.block = nn.Sequential(nn.ELU(), SConv1d(channels, hidden, 3), nn.ELU(), SConv1d(hidden, channels, 1))
        self.shortcut = SConv1d(channels, channels, 1)  # true_skip = False upstream

    def forward(self, x):  # (B, C, L) -> (B, C, L)
        return self.shortcut(x) + self.block(x)


class SLSTM(nn.Module):
    """2-layer LSTM over time with a skip connection, run as (T, B, C) like upstream."""

    def __init__(self, channels: int, num_layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(channels, channels, num_layers)

    def forward(self, x):  # (B, C, T) -> (B, C, T)
        x = x.permute(2, 0, 1)  # (T, B, C)
        y, _ = self.lstm(x)
        return (y + x).permute(1, 2, 0)


class SEANetEncoder(nn.Module):
    """(B, 1, N) audio -> (B, dimension, ceil(N / prod(ratios))) continuous frames."""

    def __init__(self, n_filters: int, dimension: int, ratios: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = [SConv1d(1, n_filters, 7)]
        channels = n_filters
        for ratio in reversed(ratios):
            layers += [ResidualBlock(channels), nn.ELU(), SConv1d(channels, 2 * channels, 2 * ratio, stride=ratio)]
            channels *= 2
        layers += [SLSTM(channels), nn.ELU(), SConv1d(channels, dimension, 7)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class SEANetDecoder(nn.Module):
    """Parameters of upstream's SEANet decoder, kept only so the checkpoint loads strictly.

    Layout: conv dimension -> 16*nf (k7), LSTM, then per ratio 8, 5, 4, 2 an ELU, a transposed
    conv halving the channels and a residual block, then ELU and conv nf -> 1 (k7).
    WavTokenizer never runs it (its decoder is the Vocos backbone + ISTFT head), hence no forward.
    """

    def __init__(self, n_filters: int, dimension: int):
        super().__init__()
        channels = n_filters * 2 ** len(DECODER_RATIOS)
        layers: list[nn.Module] = [SConv1d(dimension, channels, 7), SLSTM(channels)]
        for ratio in DECODER_RATIOS:
            layers += [
                nn.ELU(),
                SConvTranspose1d(channels, channels // 2, 2 * ratio, ratio),
                ResidualBlock(channels // 2),
            ]
            channels //= 2
        layers += [nn.ELU(), SConv1d(n_filters, 1, 7)]
        self.model = nn.Sequential(*layers)
