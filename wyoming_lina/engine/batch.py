"""The running batch: every active utterance's text context, recurrent state and next input.

Rows join (``extend``) and leave (``keep``) only between steps; the tensors are re-stacked
then and stay put while rows generate (text-generation-inference's filter/concatenate).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from ..model import LinaState, TextContext
from .rows import Row
from .transfer import to_device

# Every set of batch tensors gets its own number, unique in the process: the graphed step knows
# by it whether its buffers already hold this batch (an object id can be reused once freed).
_GENERATIONS = itertools.count(1)


@dataclass
class ActiveBatch:
    rows: list[Row] = field(default_factory=list)
    ctx: TextContext | None = None
    state: LinaState | None = None
    next_tokens: torch.Tensor | None = None  # [B] input of the next step
    counters: torch.Tensor | None = None  # [B] sampling counter (steps sampled so far)
    top_k: torch.Tensor | None = None
    top_p: torch.Tensor | None = None
    temperature: torch.Tensor | None = None
    seeds: torch.Tensor | None = None
    min_frames: torch.Tensor | None = None  # [B] EOS is not sampled before this many frames
    generation: int = field(default_factory=lambda: next(_GENERATIONS))  # new whenever rows join or leave

    def __len__(self) -> int:
        return len(self.rows)

    _TENSORS = ("next_tokens", "counters", "top_k", "top_p", "temperature", "seeds", "min_frames")

    def keep(self, indices: list[int]) -> None:
        """Keep only these rows (in this order)."""
        if len(indices) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in indices]
        self.generation = next(_GENERATIONS)
        if not indices:
            self.ctx = self.state = None
            for name in self._TENSORS:
                setattr(self, name, None)
            return
        idx = to_device(indices, self.next_tokens.device, torch.long)  # no sync: steps may be queued
        self.ctx = self.ctx.select(idx)
        self.state = self.state.select(idx)
        for name in self._TENSORS:
            setattr(self, name, getattr(self, name)[idx])

    def extend(self, other: ActiveBatch) -> None:
        if not other.rows:
            return
        generation = next(_GENERATIONS)
        if not self.rows:
            self.__dict__.update(other.__dict__)
            self.generation = generation
            return
        self.generation = generation
        self.rows = self.rows + other.rows
        self.ctx = TextContext.cat([self.ctx, other.ctx])
        self.state = LinaState.cat([self.state, other.state])
        for name in self._TENSORS:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))

    @property
    def max_k(self) -> int:
        """Largest top_k of the rows (asked every step: computed once per set of rows)."""
        cached = self.__dict__.get("_max_k")
        if cached is None or cached[0] is not self.rows:
            cached = (self.rows, max(r.job.sampling.top_k for r in self.rows))
            self.__dict__["_max_k"] = cached
        return cached[1]
