"""Token sampling for a batch of rows, each with its own settings and random stream.

Every generation samples through ``sample_tokens`` (engine rows on the CPU and inside the
captured CUDA-graph step, the built-in voice's generator), so one rule holds everywhere:
PAD and BOS are never sampled (they are not speech), and EOS is not sampled before a row has
produced its ``min_frames`` (``engine.lengths``; the row's counter is its frame count).

Randomness is counter-based: row r at its step t draws u = hash(seed_r, t), computed on the
device. A row therefore samples the same tokens whether it runs alone or inside any batch,
and no per-row generator lives on the host. Temperature is applied before the top-k
threshold (upstream applies it after, which changes the kept set for temperature != 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import BOS, EOS, PAD

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class SamplingOptions:
    top_k: int = 100  # upstream default; 1 = greedy
    top_p: float = 1.0  # nucleus threshold within the top k; 1.0 = off
    temperature: float = 1.0  # 0 = greedy
    seed: int | None = None  # None: a random seed per request

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.temperature <= 10.0:
            raise ValueError(f"temperature must be in [0, 10], got {self.temperature}")

    @property
    def greedy(self) -> bool:
        return self.top_k == 1 or self.temperature == 0.0


def _to_signed(x: int) -> int:
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _to_signed(0x9E3779B97F4A7C15)
_MIX1 = _to_signed(0xBF58476D1CE4E5B9)
_MIX2 = _to_signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 viewed as uint64."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def counter_uniform(seeds: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """splitmix64(seed * golden + counter) -> float64 uniform in [0, 1); int64 tensors in."""
    x = seeds * _GOLDEN + counters  # wraps like uint64
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    x = x ^ _shr(x, 31)
    return _shr(x, 11).double() / float(1 << 53)


def allowed_logits(logits: torch.Tensor, counters: torch.Tensor, min_frames: torch.Tensor) -> torch.Tensor:
    """logits [B, V] with what may not be sampled now at -inf: PAD and BOS always, EOS while
    the row's counter (frames produced) is below its ``min_frames``. Pure tensor ops, so it
    runs inside the captured step as on the CPU."""
    column = torch.arange(logits.shape[-1], device=logits.device)[None, :]
    special = (column == PAD) | (column == BOS)
    early_eos = (column == EOS) & (counters < min_frames)[:, None]
    return logits.float().masked_fill(special | early_eos, float("-inf"))


def sample_tokens(
    logits: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    temperature: torch.Tensor,
    seeds: torch.Tensor,
    counters: torch.Tensor,
    max_k: int,
    min_frames: torch.Tensor,
) -> torch.Tensor:
    """logits [B, V] float; per-row top_k/top_p/temperature/seeds/counters/min_frames [B].
    Returns [B] int64, never PAD or BOS, and EOS only for rows whose counter >= min_frames.

    Rows with top_k == 1 or temperature == 0 take the argmax (of the allowed tokens) exactly.
    """
    greedy = (top_k == 1) | (temperature == 0)
    temp = torch.where(greedy, torch.ones_like(temperature), temperature)
    logits = allowed_logits(logits, counters, min_frames)
    values, indices = torch.topk(logits / temp[:, None], min(max_k, logits.shape[-1]), dim=-1)
    rank = torch.arange(values.shape[-1], device=logits.device)[None, :]
    values = values.masked_fill(rank >= top_k[:, None], float("-inf"))
    probs = torch.softmax(values, dim=-1)
    cum = probs.cumsum(-1)
    # nucleus: keep ranks whose preceding mass is below top_p (always keeps rank 0)
    probs = probs.masked_fill((cum - probs) >= top_p[:, None], 0.0)
    cum = probs.cumsum(-1)
    u = counter_uniform(seeds, counters).to(cum.dtype) * cum[:, -1]
    choice = torch.searchsorted(cum, u[:, None]).clamp_max(values.shape[-1] - 1)[:, 0]
    choice = torch.where(greedy, torch.zeros_like(choice), choice)
    return indices.gather(1, choice[:, None])[:, 0]
