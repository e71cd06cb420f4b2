"""Recurrent state of the whole model, and the initial states learned by IST.

``LinaState`` is the explicit per-request memory: one ``GLAState`` per GLA layer
(encoder 0..n-1, decoder n..2n-1, pos_net 2n). It can be split by rows and stacked, so the
engine can batch many utterances. ``SpeakerState`` is the low-rank initial state of
initial-state tuning, in upstream's safetensors layout (``layer{i}_k``, ``layer{i}_v``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import VoiceError
from .config import LinaConfig
from .gla import GLAState, zero_gla_state

IST_SCALE = 0.02  # S0 = 0.02 * sum_r k_r v_r^T (upstream get_state_from_params)


@dataclass
class LinaState:
    layers: list[GLAState]

    @property
    def batch_size(self) -> int:
        return self.layers[0].S.shape[0]

    def select(self, rows) -> LinaState:
        return LinaState([GLAState(*(None if t is None else t[rows] for t in layer)) for layer in self.layers])

    def to(self, dtype: torch.dtype) -> LinaState:
        return LinaState([GLAState(*(None if t is None else t.to(dtype) for t in layer)) for layer in self.layers])

    @staticmethod
    def cat(states: list[LinaState]) -> LinaState:
        layers = []
        for per_layer in zip(*(s.layers for s in states)):
            layers.append(GLAState(*(None if ts[0] is None else torch.cat(ts) for ts in zip(*per_layer))))
        return LinaState(layers)


@dataclass
class InitialState:
    """Initial recurrent states S0 [1, H, dk, dv] for the 2n encoder/decoder GLA layers."""

    S: list[torch.Tensor]


def initial_lina_state(cfg: LinaConfig, batch: int, initial: InitialState | None = None, device=None) -> LinaState:
    """Zero state for every layer, with S taken from ``initial`` for the encoder/decoder layers.

    Conv windows and the pos_net state always start at zero (as upstream).
    """
    layers = [zero_gla_state(cfg.gla, batch, device) for _ in range(2 * cfg.n_layer)]
    layers.append(zero_gla_state(cfg.pos_net, batch, device))
    if initial is not None:
        if len(initial.S) != 2 * cfg.n_layer:
            raise VoiceError(f"initial state has {len(initial.S)} layers, the model {2 * cfg.n_layer}")
        for i, s0 in enumerate(initial.S):
            layers[i] = layers[i]._replace(
                S=s0.to(device=layers[i].S.device, dtype=torch.float32).expand(batch, -1, -1, -1)
            )
    return LinaState(layers)


class SpeakerState(nn.Module):
    """Low-rank IST parameters: S0[i] = 0.02 * sum_r k[i, r] (x) v[i, r], per head.

    Parameters ``layer{i}_k`` [1, r, H, dk, 1] and ``layer{i}_v`` [1, r, H, 1, dv], exactly
    upstream's speaker-state file layout, so files round-trip with upstream code.
    """

    def __init__(self, cfg: LinaConfig, rank: int = 1, generator: torch.Generator | None = None):
        super().__init__()
        self.n_layers = 2 * cfg.n_layer
        g = cfg.gla
        for i in range(self.n_layers):
            k = torch.randn(1, rank, g.heads, g.head_k, 1, generator=generator)
            v = torch.randn(1, rank, g.heads, 1, g.head_v, generator=generator) * 0.02
            self.register_parameter(f"layer{i}_k", nn.Parameter(k))
            self.register_parameter(f"layer{i}_v", nn.Parameter(v))

    def initial_state(self) -> InitialState:
        """Differentiable S0 for every encoder/decoder layer."""
        return InitialState(
            [
                IST_SCALE * (getattr(self, f"layer{i}_k") * getattr(self, f"layer{i}_v")).sum(1)  # (1, H, dk, dv)
                for i in range(self.n_layers)
            ]
        )

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        from safetensors.torch import save_file

        tensors = {name: p.detach().float().contiguous().cpu() for name, p in self.named_parameters()}
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def from_file(cls, path: str | Path, cfg: LinaConfig) -> SpeakerState:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise VoiceError(f"cannot read speaker state {path}: {err}") from err
        expected = {f"layer{i}_{kv}" for i in range(2 * cfg.n_layer) for kv in "kv"}
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise VoiceError(f"speaker state {path} does not fit this model: missing {missing}, unexpected {extra}")
        rank = tensors["layer0_k"].shape[1]
        state = cls(cfg, rank=rank)
        for name, param in state.named_parameters():
            if tensors[name].shape != param.shape:
                raise VoiceError(
                    f"speaker state {path}: {name} has shape {list(tensors[name].shape)}, "
                    f"the model needs {list(param.shape)}"
                )
            if not torch.isfinite(tensors[name]).all():
                raise VoiceError(f"speaker state {path}: {name} holds NaN or infinite values")
            param.data.copy_(tensors[name])
        return state


def load_speaker_state(path: str | Path, model) -> InitialState:
    """Read an upstream speaker-state file into an initial state for ``model``."""
    with torch.no_grad():
        init = SpeakerState.from_file(path, model.config).initial_state()
    device = next(model.parameters()).device
    return InitialState([s.to(device) for s in init.S])
