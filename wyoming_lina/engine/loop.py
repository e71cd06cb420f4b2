"""The engine: one thread per device owns the model and the codec and loops

    hand out audio -> schedule (drop leaving rows, admit waiting ones) -> execute (prefill the
    new rows, launch one decode step) -> process outputs (tokens -> codec windows -> audio)

in three parts with one job each (vLLM's ``EngineCore.step`` shape): the ``Scheduler`` decides
who runs, the ``Runner`` executes the model (one implementation per device), the
``OutputProcessor`` turns tokens into delivered audio. Each request is one ``Row`` whose phase
says where it is (``rows.py``). Callers talk to the engine only through ``submit`` (thread-safe)
and their ``JobHandle``; start-up work runs on the engine thread through ``execute``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable

import torch

from ..errors import OverloadedError, ShuttingDownError, SynthesisError, UnsupportedTextError
from ..model import LinaModel
from .batch import ActiveBatch
from .decoding import StreamingDecoder
from .job import GenerationJob, JobHandle
from .outputs import OutputProcessor
from .rows import Row
from .runner import StepTokens, make_runner
from .scheduler import Scheduler
from .settings import EngineSettings

_LOGGER = logging.getLogger(__name__)


class Engine:
    @classmethod
    def create(cls, model: LinaModel, decoder: StreamingDecoder, *, compile: bool = True, **overrides) -> Engine:
        """An engine with the measured settings for the model's device (``EngineSettings.for_device``)."""
        if model.device.type == "cuda":
            model.fuse_projections()
        return cls(model, decoder, EngineSettings.for_device(model.device.type, compile=compile, **overrides))

    def __init__(self, model: LinaModel, decoder: StreamingDecoder, settings: EngineSettings | None = None):
        self.model = model
        self.decoder = decoder
        self.settings = settings or EngineSettings()
        self.scheduler = Scheduler(self.settings)
        self.runner = make_runner(model, self.settings)
        self.outputs = OutputProcessor(decoder, self.settings.decode_interval)
        self.batch = ActiveBatch()
        self._calls: queue.SimpleQueue[tuple[Callable, concurrent.futures.Future]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    # --- caller side -------------------------------------------------------------------------
    def submit(self, job: GenerationJob, loop: asyncio.AbstractEventLoop | None = None) -> JobHandle:
        """Queue a job; OverloadedError when the queue is full, ShuttingDownError when stopping."""
        if len(job.text_ids) > self.model.config.max_text_len:
            raise UnsupportedTextError(
                f"text of {len(job.text_ids)} tokens is longer than the model's {self.model.config.max_text_len}"
            )
        handle = JobHandle(job, loop or asyncio.get_running_loop())
        row = Row(handle)
        handle.on_cancel = functools.partial(self.scheduler.cancel, row)
        self.scheduler.submit(row)
        return handle

    def execute(self, fn: Callable[[], object]) -> concurrent.futures.Future:
        """Run ``fn()`` on the engine thread between two iterations; a future of its result. The
        model and the GPU are used from that thread only (start-up warm-up goes through here).
        Without a running thread (tests, tools) ``fn`` runs now, on the caller's thread."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self._thread is None:
            _call(fn, future)
        else:
            self._calls.put((fn, future))
            self.scheduler.wake()
        return future

    def start(self) -> None:
        if self._thread is None:
            self.scheduler.restart()
            self._thread = threading.Thread(target=self._run, name="lina-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop; unfinished jobs fail with ShuttingDownError."""
        waiting = self.scheduler.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        error = ShuttingDownError("the server is shutting down")
        self._fail_active(error)
        for row in waiting:
            row.finish(error)
        while not self._calls.empty():
            _, future = self._calls.get()
            future.set_exception(error)

    @property
    def load(self) -> tuple[int, int]:
        """(active rows, waiting jobs)."""
        return len(self.batch), self.scheduler.waiting

    @property
    def steps(self) -> int:
        return self.runner.steps

    # --- start-up work (call through ``execute``) ------------------------------------------
    def warm_graphs(self, text_lengths: tuple[int, ...] | None = None, top_k: int = 100) -> int:
        """Capture the step graphs ahead of traffic (after one synthesis allocated the buffers)."""
        return self.runner.warm_graphs(text_lengths, top_k)

    def warm_prefill(self, prompt_frames: int = 75) -> list[int]:
        """Tune the prompt prefill at every padded batch size the loop can use."""
        return self.runner.prefill.warm(prompt_frames)

    def warm_codec(self) -> int:
        """Capture the streaming codec's window graphs (CUDA). Returns the number of graphs."""
        return self.decoder.capture_graphs(rows=self.settings.max_batch)

    # --- engine thread -------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while self.scheduler.wait_for_work(self._busy):
                while not self._calls.empty():
                    _call(*self._calls.get())
                self.run_once_safely()

    def _busy(self) -> bool:
        return bool(self.batch.rows or self.runner.queued or self.outputs.busy or not self._calls.empty())

    def run_once_safely(self) -> None:
        """One iteration; a failure never ends the loop (see ``_recover``)."""
        try:
            self.run_once()
            self.scheduler.iteration_succeeded()
        except Exception as err:
            self._recover(err)

    @torch.inference_mode()
    def run_once(self) -> None:
        """One iteration of the loop (called by the thread; tests may call it directly)."""
        self.outputs.hand_out()
        self._drop_leaving()
        self._admit()
        if self.batch.rows and self.runner.steps < self.outputs.limit_step:
            self._process(self.runner.launch(self.batch))
        else:  # every row meets its frame limit in a step already queued (or none is left)
            self._process(self.runner.drain())
            if not self.batch.rows:  # only the discarded extra steps of ended rows can be left
                self.outputs.flush_log()
                self.outputs.hand_out(wait=True)

    # schedule
    def _drop_leaving(self) -> None:
        plan = self.scheduler.leaving(self.batch.rows)
        if plan is None:
            return
        keep, leaving = plan
        self.batch.keep(keep)  # rows leave the batch before their callers hear they ended
        for row, error in leaving:
            row.finish(error)

    def _admit(self) -> None:
        rows = self.scheduler.admit(len(self.batch))
        if not rows:
            return
        for group in self.runner.prefill.groups([row.job for row in rows]):
            members = [rows[i] for i in group]
            try:
                self._start(members)
            except Exception as err:
                if len(members) == 1:
                    self._fail_start(members[0], err)
                    continue
                for row in members:  # find the bad one: the others still start
                    try:
                        self._start([row])
                    except Exception as single_err:
                        self._fail_start(row, single_err)

    # execute
    def _start(self, rows: list[Row]) -> None:
        added, seeds = self.runner.prefill.prepare([row.job for row in rows])
        now, first_step = time.monotonic(), self.runner.steps + 1  # the next step samples their first token
        for row, seed in zip(rows, seeds):
            row.admit(seed, self.decoder.open(), first_step)
            row.handle.stats.started = now
        added.rows = rows
        self.batch.extend(added)
        self.scheduler.joined(rows)
        self.outputs.track(rows)

    @staticmethod
    def _fail_start(row: Row, err: Exception) -> None:
        _LOGGER.error("could not start a job: %s", err, exc_info=err)
        row.finish(err if isinstance(err, SynthesisError) else SynthesisError(f"could not start: {err}"))

    # process outputs
    def _process(self, steps: list[StepTokens]) -> None:
        for done in steps:
            ended = self.outputs.process(done)
            if ended is None:
                continue
            if ended:  # they leave the batch now; their callers hear the end after their last audio
                self.batch.keep([i for i, row in enumerate(self.batch.rows) if row.generating])
                self.outputs.finish_after_audio(ended)
            self.outputs.hand_out()

    # failures
    def _recover(self, err: Exception) -> None:
        """Out of GPU memory: fail only the newest half of the rows (the oldest keep their
        progress) and admit fewer rows for a while. Any other failure: fail the active rows."""
        try:  # steps already queued ran on the GPU (states advanced): their tokens belong to the rows
            self._process(self.runner.drain())
        except Exception:  # noqa: BLE001 (they failed too: nothing to keep)
            self.runner.drop_queued()
        self.scheduler.iteration_failed()
        rows = [row for row in self.batch.rows if row.generating]
        if isinstance(err, torch.OutOfMemoryError) and len(rows) > 1:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            survivors = self.scheduler.out_of_memory(len(rows))
            _LOGGER.warning(
                "out of GPU memory with %d rows: failing the newest %d, admitting at most %d for now",
                len(rows), len(rows) - survivors, self.scheduler.max_batch,
            )  # fmt: skip
            overloaded = OverloadedError("the GPU ran out of memory; try again shortly")
            for row in rows[survivors:]:
                row.finish(overloaded)
            self.batch.keep([i for i, row in enumerate(self.batch.rows) if row.generating])
            return
        _LOGGER.exception("generation step failed; failing %d active rows", len(self.batch), exc_info=err)
        self._fail_active(SynthesisError(f"generation failed: {err}"))

    def _fail_active(self, error: Exception) -> None:
        """Fail every row in the batch or with audio still decoding; forget their bookkeeping."""
        for row in self.batch.rows:
            row.finish(error)
        self.outputs.fail_all(error)
        self.batch = ActiveBatch()
        self.runner.drop_queued()


def _call(fn: Callable, future: concurrent.futures.Future) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        with torch.inference_mode():
            future.set_result(fn())
    except BaseException as err:  # noqa: BLE001 (handed to the caller)
        future.set_exception(err)
