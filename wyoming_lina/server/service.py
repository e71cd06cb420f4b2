"""What the handlers (and the studio) serve with, once the model is loaded, and where start-up is.

The server listens from its first second: ``describe`` is answered from the data dir while the
model loads; a request that arrives then waits for the synthesizer (``Service.wait``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine.synthesizer import Synthesizer


@dataclass
class ServingState:
    """Where start-up is, for the log and /healthz: loading (the port answers describe) ->
    serving (requests are spoken; the fast paths are still being prepared) -> warm."""

    phase: str = "loading"
    step: str = ""  # how decode steps run: plain (CPU); pytorch, kernels, graphs, compiled (CUDA: WarmUp)
    started: float = field(default_factory=time.monotonic)
    error: str = ""  # why loading failed

    def as_dict(self) -> dict:
        out = {"phase": self.phase, "step": self.step or None, "seconds": round(time.monotonic() - self.started, 1)}
        return out | ({"error": self.error} if self.error else {})


class Service:
    """The synthesizer once the model is loaded. Requests that arrive before wait for it (a
    describe never does: voices are listed from the data dir)."""

    def __init__(self, state: ServingState | None = None):
        self.state = state or ServingState()
        self._synthesizer: Synthesizer | None = None
        self._ready = asyncio.Event()

    @classmethod
    def ready_with(cls, synthesizer: Synthesizer) -> Service:
        service = cls()
        service.provide(synthesizer)
        return service

    def provide(self, synthesizer: Synthesizer) -> None:
        self._synthesizer = synthesizer
        self.state.phase = "serving"
        self._ready.set()

    @property
    def synthesizer(self) -> Synthesizer | None:
        return self._synthesizer

    async def wait(self) -> Synthesizer:
        await self._ready.wait()
        return self._synthesizer
