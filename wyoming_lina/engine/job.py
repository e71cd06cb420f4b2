"""What the engine is asked to generate, and how the asker receives the audio.

A ``GenerationJob`` is one utterance (one sentence): token ids, the voice conditioning and
the sampling settings. ``JobHandle`` is its asyncio-side end: the engine thread delivers
audio chunks into it thread-safely; the caller iterates it and may cancel it at any time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model import InitialState
from .sampling import SamplingOptions


@dataclass(frozen=True)
class GenerationJob:
    text_ids: list[int]  # "[BOS]" + (prompt transcript + " ") + text + "[EOS]"
    max_frames: int  # the row ends here if it has not sampled EOS (engine.lengths)
    min_frames: int = 0  # EOS is not sampled before this many frames
    sampling: SamplingOptions = SamplingOptions()
    prompt_codes: torch.Tensor | None = None  # [P] codec codes of the voice clip
    initial_state: InitialState | None = None  # IST voice state
    deadline: float | None = None  # time.monotonic() after which the job fails
    owner: object = None  # whose job (one client's request): the scheduler takes owners in turn

    def __post_init__(self):
        if len(self.text_ids) < 2:
            raise ValueError("text_ids must hold at least BOS and EOS")
        if self.max_frames < 1:
            raise ValueError("max_frames must be positive")
        if not 0 <= self.min_frames <= self.max_frames:
            raise ValueError(f"min_frames must be in [0, max_frames], got {self.min_frames}")


@dataclass
class JobStats:
    frames: int = 0  # codec frames generated (75 per second of audio)
    stop_reason: str = ""  # "eos", "max_frames", "cancelled" or "error"
    tokens: list[int] = field(default_factory=list)  # sampled token ids (codes + 3; EOS last if reached)
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None  # joined the batch
    first_audio: float | None = None
    finished: float | None = None


class _Done:
    pass


def _put_all(items) -> None:
    for queue, item in items:
        queue.put_nowait(item)


class JobHandle:
    """Async iterator of float32 audio chunks (24 kHz mono) for one job."""

    def __init__(self, job: GenerationJob, loop: asyncio.AbstractEventLoop):
        self.job = job
        self.stats = JobStats()
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._cancelled = threading.Event()
        self.on_cancel = None  # set by the engine: called (any thread) after cancel()
        self.done = False

    # --- engine thread side ------------------------------------------------------------
    def deliver(self, samples: np.ndarray) -> None:
        """Queue audio for the caller (dropped if the job was cancelled or failed meanwhile)."""
        JobHandle.deliver_many([(self, samples)])

    @staticmethod
    def deliver_many(chunks: list[tuple[JobHandle, np.ndarray]]) -> None:
        """``handle.deliver(samples)`` for many handles with ONE wake-up per event loop: each
        ``call_soon_threadsafe`` writes to the loop's self-pipe, and at hundreds of streams those
        system calls cost more than the audio bookkeeping."""
        now = time.monotonic()
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[JobHandle, np.ndarray]]] = {}
        for handle, samples in chunks:
            if handle.done:
                continue
            if handle.stats.first_audio is None:
                handle.stats.first_audio = now
            by_loop.setdefault(handle._loop, []).append((handle, samples))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, [(h._queue, samples) for h, samples in items])
            except RuntimeError:  # the callers' event loop is closed: nobody is listening
                for handle, _ in items:
                    handle.cancel()

    def finish(self, error: BaseException | None = None) -> None:
        JobHandle.finish_many([(self, error)])

    @staticmethod
    def finish_many(endings: list[tuple[JobHandle, BaseException | None]]) -> None:
        """``handle.finish(error)`` for many handles with ONE wake-up per event loop (as
        ``deliver_many``): rows of a batch often end in the same step, and each wake-up is a
        system call on the engine thread, a moment the event loop can take the GIL from it."""
        now = time.monotonic()
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[JobHandle, object]]] = {}
        for handle, error in endings:
            if handle.done:
                continue
            handle.done = True
            handle.stats.finished = now
            by_loop.setdefault(handle._loop, []).append((handle, error if error is not None else _Done()))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, [(h._queue, item) for h, item in items])
            except RuntimeError:  # the callers' event loop is closed: nobody is listening
                for handle, _ in items:
                    handle.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # --- caller side ---------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the engine to drop this job before its next step."""
        self._cancelled.set()
        if self.on_cancel is not None:
            self.on_cancel()

    def __aiter__(self):
        return self

    async def __anext__(self) -> np.ndarray:
        item = await self._queue.get()
        if isinstance(item, _Done):
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item
