"""Executing the model for the batch: prefill of joining rows and one decode step at a time.

One implementation per device, chosen once (``make_runner``):

* ``PlainRunner`` (CPU): ``model.step`` + sampling; each step's tokens come back at once.
* ``GraphedRunner`` (CUDA): the step replayed from a CUDA graph (``graphed_step``), its tokens
  copied to pinned memory, and up to ``settings.queued_steps(rows)`` steps left queued on the
  GPU while the host processes the oldest one, so a slow host iteration (an admission, a codec
  flush of 256 rows) does not idle the GPU. A row that ended runs the queued steps too; the
  output processor ignores those tokens. It serves at once with graphs of the plain step
  (captured in milliseconds); a ``torch.compile``d twin is compiled on another thread
  (``precompile``), its graphs captured between iterations, and then it takes over
  (``use_compiled``) without a pause.

``launch`` returns the steps whose tokens are now on the host, oldest first.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..model import BOS, EOS, LinaModel
from .batch import ActiveBatch
from .graphed_step import GraphedStep
from .job import GenerationJob
from .prefill import Prefiller
from .rows import Row
from .sampling import sample_tokens
from .settings import EngineSettings

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepTokens:
    """The tokens one step sampled, per row of the batch it ran on (the list is never mutated:
    the batch replaces it when rows join or leave)."""

    step: int
    rows: list[Row]
    tokens: np.ndarray  # [len(rows)] int64


class Runner:
    def __init__(self, model: LinaModel, settings: EngineSettings):
        self.model = model
        self.settings = settings
        self.prefill = Prefiller(
            model,
            pad=settings.pad_prefill,
            max_batch=settings.max_prefill_batch,
            cache_size=settings.prompt_cache_size,
            bf16_prompts=settings.cpu_quant == "q8",  # (on a CPU only: prefill.py)
        )
        self.steps = 0  # steps launched so far

    @property
    def queued(self) -> int:
        """Steps launched whose tokens the host has not taken yet."""
        return 0

    def launch(self, batch: ActiveBatch) -> list[StepTokens]:
        raise NotImplementedError

    def drain(self) -> list[StepTokens]:
        """Every queued step's tokens (waiting for the device)."""
        return []

    def drop_queued(self) -> None:
        """Forget the queued steps (they failed)."""

    compile_wanted = False  # a compiled step to prepare (GraphedRunner on CUDA)

    def graph_keys(self, text_lengths=None, top_k: int = 100) -> list:
        """The CUDA-graph buckets to capture at warm-up (none without graphs)."""
        return []

    def warm_graphs(self, text_lengths=None, top_k: int = 100) -> int:
        return 0


class PlainRunner(Runner):
    """The plain step (CPU): one step, one host sync, its tokens at once. With ``cpu_quant="q8"``
    the step is one ONNX Runtime graph on 8-bit weights (``OnnxStep``, made once here from the
    float32 model); text encoding stays float32, a prompt's prefill runs its products in bfloat16
    (engine/prefill.py)."""

    def __init__(self, model: LinaModel, settings: EngineSettings):
        super().__init__(model, settings)
        self.quantized = None
        if settings.cpu_quant == "q8" and model.device.type == "cpu":
            from ..model.cpu_step import OnnxStep

            started = time.monotonic()
            self.quantized = OnnxStep(model, cache_dir=settings.cpu_step_cache)
            how = "loaded from the data dir" if self.quantized.from_cache else "built"
            _LOGGER.info("quantized CPU step %s in %.1f s", how, time.monotonic() - started)

    @property
    def step(self):
        """The step function: the quantized one, or the model's (float32)."""
        return self.quantized.step if self.quantized is not None else self.model.step

    def launch(self, batch: ActiveBatch) -> list[StepTokens]:
        rows = batch.rows
        logits, batch.state = self.step(batch.ctx, batch.next_tokens, batch.state)
        tokens = sample_tokens(
            logits,
            batch.top_k,
            batch.top_p,
            batch.temperature,
            batch.seeds,
            batch.counters,
            batch.max_k,
            batch.min_frames,
        )
        batch.next_tokens = tokens
        batch.counters = batch.counters + 1
        self.steps += 1
        return [StepTokens(self.steps, rows, tokens.cpu().numpy())]  # the one host sync per step


@dataclass(frozen=True)
class _LaunchedStep:
    step: int
    rows: list[Row]
    host_tokens: torch.Tensor  # pinned slot the tokens are copied into
    event: torch.cuda.Event | None  # recorded after the copy (None: eager on the CPU)

    def take(self) -> StepTokens:
        if self.event is not None:
            self.event.synchronize()
        return StepTokens(self.step, self.rows, self.host_tokens.numpy().copy())


class GraphedRunner(Runner):
    """The CUDA-graph step with steps queued ahead of the host (``settings.graphs``; with
    ``capture=False`` the same code runs eagerly, which is how the CPU tests exercise it)."""

    def __init__(self, model: LinaModel, settings: EngineSettings):
        super().__init__(model, settings)
        config = settings.graphs
        self.graphed = GraphedStep(model, dataclasses.replace(config, compile=False))  # serves from the start
        self.compile_wanted = config.compile
        self._twin: GraphedStep | None = None  # the compiled step while it is being prepared
        pin = model.device.type == "cuda"
        self._host_tokens = [
            torch.zeros(self.graphed.capacity, dtype=torch.long, pin_memory=pin)
            for _ in range(settings.pipeline_depth + 1)
        ]
        self._in_flight: collections.deque[_LaunchedStep] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._in_flight)

    def launch(self, batch: ActiveBatch) -> list[StepTokens]:
        rows = batch.rows
        tokens = self.graphed(batch)  # state, tokens and counters updated in place
        self.steps += 1
        slot = self._host_tokens[self.steps % len(self._host_tokens)][: len(rows)]
        slot.copy_(tokens, non_blocking=True)
        event = torch.cuda.Event() if tokens.is_cuda else None
        if event is not None:
            event.record()
        self._in_flight.append(_LaunchedStep(self.steps, rows, slot, event))
        done = []
        while len(self._in_flight) > self.settings.queued_steps(len(rows)):
            done.append(self._in_flight.popleft().take())
        return done

    def drain(self) -> list[StepTokens]:
        done = []
        while self._in_flight:
            done.append(self._in_flight.popleft().take())
        return done

    def drop_queued(self) -> None:
        self._in_flight.clear()

    # --- warm-up: each piece runs between iterations (engine thread) unless it says otherwise ---
    @property
    def compiled(self) -> bool:
        return self.graphed.config.compile

    def allocate(self) -> None:
        """The step's static buffers, shaped by a dummy batch (one tiny prefill)."""
        if not self.graphed.allocated:
            template, _ = self.prefill.prepare([GenerationJob([BOS, 5, EOS], max_frames=1)])
            self.graphed.allocate(template)

    def graph_keys(self, text_lengths: tuple[int, ...] | None = None, top_k: int = 100) -> list[tuple[int, int, int]]:
        """The buckets to capture or compile (default: every text bucket up to 256 tokens)."""
        config = self.graphed.config
        if not (config.capture or self.compile_wanted):
            return []
        return self.graphed.keys(text_lengths or tuple(n for n in config.text_buckets if n <= 256), top_k)

    def capture(self, key: tuple[int, int, int]) -> bool:
        """Capture the serving step's graph for one bucket (milliseconds once ``prepare_kernels``
        has run)."""
        return self.graphed.capture(key)

    def prepare_kernels(self, keys: list[tuple[int, int, int]]) -> None:
        """ON ANOTHER THREAD than the engine's: run the plain step once at every bucket on a
        throwaway twin's buffers, so its Triton kernels are built and loaded (seconds each on a
        first start) before the engine thread captures its graphs between iterations: a capture
        then takes milliseconds, and requests in progress are not held up by it."""
        twin = GraphedStep(self.model, self.graphed.config)
        twin.allocate_like(self.graphed)
        try:
            twin.precompile(keys)
        finally:
            twin.release()

    def precompile(self, keys: list[tuple[int, int, int]], compile: bool = True) -> None:
        """ON ANOTHER THREAD than the engine's: a compiled twin of the step (``compile=False``: an
        uncompiled one, for tests), with its own buffers, compiled for every bucket (minutes on a
        first start, seconds with the data dir's caches) while the engine goes on serving."""
        twin = GraphedStep(self.model, dataclasses.replace(self.settings.graphs, compile=compile))
        twin.allocate_like(self.graphed)
        twin.precompile(keys)
        self._twin = twin

    def capture_compiled(self, key: tuple[int, int, int]) -> bool:
        """Capture the compiled twin's graph for one bucket (after ``precompile``)."""
        return self._twin.capture(key)

    def use_compiled(self) -> None:
        """The compiled twin takes over; the batch moves into its buffers at the next step."""
        if self._twin is None:
            return
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)  # queued replays of the old graphs finish first
        old, self.graphed, self._twin = self.graphed, self._twin, None
        old.release()  # (the batch's tensors keep the old buffers alive until they move over)
        if self.model.device.type == "cuda":
            torch.cuda.empty_cache()  # the plain step's graphs go back to the driver (other programs on the card)

    def warm_graphs(self, text_lengths: tuple[int, ...] | None = None, top_k: int = 100) -> int:
        """Everything at once (benchmarks, tests): capture the step graphs of every bucket for
        these text lengths and, when the settings compile, compile the step and switch to it.
        Returns the graphs the serving step has."""
        keys = self.graph_keys(text_lengths, top_k)
        if not keys:
            return 0
        self.allocate()
        for key in keys:
            self.capture(key)
        if self.compile_wanted and not self.compiled:
            self.precompile(keys)
            for key in keys:
                self.capture_compiled(key)
            self.use_compiled()
        return self.graphed.graph_count


def make_runner(model: LinaModel, settings: EngineSettings) -> Runner:
    """The runner for these settings: graphed when ``settings.graphs`` is set, else plain."""
    return PlainRunner(model, settings) if settings.graphs is None else GraphedRunner(model, settings)
