"""The generation loop: one thread per device owns the model and the codec.

Each iteration: hand out decoded audio -> drop cancelled or overdue rows -> admit waiting
jobs (text encoding and ONE parallel prompt prefill each) -> one batched decode step for
every active row -> sample -> record the tokens (vectorised: per-row Python work only when
a row ends, reaches its first audio, or every ``decode_interval`` steps) -> launch the newly
decodable codec windows of all rows in one batched call (on CUDA on the codec's own stream,
overlapping the next LM steps) -> retire finished rows once their last audio is out.
Callers talk to it only through ``submit`` (thread-safe) and their ``JobHandle``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import random
import threading
import time

import numpy as np
import torch

from ..errors import DeadlineExceededError, OverloadedError, ShuttingDownError, SynthesisError, UnsupportedTextError
from ..model import BOS, EOS, N_SPECIAL_AUDIO, LinaModel, LinaState
from ..triton_support import triton_available
from .batch import ActiveBatch, Row
from .decoding import LaunchedDecode, StreamingDecoder
from .graphed_step import GraphConfig, GraphedStep
from .job import GenerationJob, JobHandle, deliver_all
from .sampling import sample_tokens
from .transfer import to_device

_LOGGER = logging.getLogger(__name__)


def _prompt_length(job: GenerationJob) -> int:
    return 0 if job.prompt_codes is None else len(job.prompt_codes)


def engine_options(device_type: str, *, compile: bool = True) -> dict:
    """How the loop runs on this device: CUDA replays graphed steps (one Triton kernel per GLA
    layer) with 4 to 32 steps queued ahead of the host's token processing (more at large batch),
    batches codec decodes over 16 steps (213 ms of audio; a row's first audio is decoded as soon
    as it is ready), admits up to 256 requests per iteration (one text-encoder pass per group of
    one prompt length, prompt prefills in padded batches of up to 32); the CPU runs the plain step
    and decodes every step. bench/engine_phases.py measured the depth and admission settings at
    256 streams."""
    if device_type == "cuda":
        kernel = "fused_step" if triton_available() else "naive"
        return {
            "graphs": GraphConfig(compile=compile, kernel=kernel),
            "decode_interval": 16,
            "pad_prefill": True,
            "pipeline_depth": 32,
            "max_admit_per_step": 256,
            "max_prefill_batch": 32,
        }
    return {"graphs": None, "decode_interval": 1}


def padded_batch(n: int) -> int:
    """Prefill batch size for n prompts: the next power of two. FLA's chunked kernels autotune
    once per batch size (seconds each); a few sizes can all be tuned at start-up."""
    return 1 << max(0, n - 1).bit_length()


class Engine:
    @classmethod
    def create(cls, model: LinaModel, decoder: StreamingDecoder, *, compile: bool = True, **kwargs) -> "Engine":
        """An engine with the right loop settings for the model's device."""
        if model.device.type == "cuda":
            model.fuse_projections()
        return cls(model, decoder, **engine_options(model.device.type, compile=compile), **kwargs)

    def __init__(
        self,
        model: LinaModel,
        decoder: StreamingDecoder,
        *,
        max_batch: int = 256,
        max_queue: int = 1024,
        max_admit_per_step: int = 16,
        max_prefill_batch: int = 16,
        graphs: GraphConfig | None = None,
        decode_interval: int = 1,
        pad_prefill: bool = False,
        pipeline_depth: int = 1,
    ):
        self.model = model
        self.decoder = decoder
        self.device = model.device
        self.max_batch = max_batch
        self._configured_max_batch = max_batch
        self._good_steps = 0
        self.max_queue = max_queue
        self.max_admit_per_step = max_admit_per_step
        self.max_prefill_batch = max_prefill_batch  # voice-prompt prefills run in batches of at most this
        self.batch = ActiveBatch()
        self._pending: collections.deque[JobHandle] = collections.deque()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.steps = 0
        self._limit_step = 0  # the step at which every admitted row has met its frame limit
        self.decode_interval = decode_interval  # batch streaming decodes over this many steps
        self.pad_prefill = pad_prefill  # prefill batches padded to powers of two (see padded_batch)
        # encoder half of each voice prompt's prefill (text-independent), most recent last
        self._prompt_cache: collections.OrderedDict[tuple[int, int], tuple] = collections.OrderedDict()
        self.prompt_cache_size = 32
        self.graphed = GraphedStep(model, graphs) if graphs is not None else None
        # graphed: steps launched whose tokens the host has not processed yet, oldest first,
        # as (step, rows, host tokens, event). Up to ``queued_steps(rows)`` stay queued on the
        # GPU, so host work that takes longer than a step now and then (a codec flush of 256
        # rows, an admission) does not leave the GPU idle. A row that ends at step t runs the
        # next ones too; those tokens are ignored.
        self.pipeline_depth = max(1, pipeline_depth)
        self.rows_per_queued_step = 8  # queued_steps: one more step may wait per this many rows
        self._cancel_seen = False  # a handle was cancelled since the last scan
        self._next_deadline = math.inf  # earliest deadline of a row in the batch
        self._inflight: collections.deque = collections.deque()
        self._log: list[tuple[int, list[Row], np.ndarray]] = []  # (step, rows, tokens) not yet handed to rows
        self._due: dict[int, list[Row]] = collections.defaultdict(list)  # step -> rows at their first window or frame limit
        # codec work in launch order: LaunchedDecode (audio to hand out) or a list of rows to
        # finish once everything before it is handed out
        self._decodes: collections.deque[LaunchedDecode | list[Row]] = collections.deque()
        if self.graphed is not None:
            self.max_batch = self._configured_max_batch = min(max_batch, self.graphed.capacity)
            pin = self.device.type == "cuda"
            self._host_tokens = [
                torch.zeros(self.graphed.capacity, dtype=torch.long, pin_memory=pin)
                for _ in range(self.pipeline_depth + 1)
            ]

    # --- caller side ---------------------------------------------------------------------
    def submit(self, job: GenerationJob, loop: asyncio.AbstractEventLoop | None = None) -> JobHandle:
        """Queue a job; raises OverloadedError when the queue is full."""
        handle = JobHandle(job, loop or asyncio.get_running_loop())
        handle.on_cancel = self._note_cancel
        if len(job.text_ids) > self.model.config.max_text_len:
            raise UnsupportedTextError(
                f"text of {len(job.text_ids)} tokens is longer than the model's {self.model.config.max_text_len}"
            )
        with self._wakeup:
            if self._stopping:
                raise ShuttingDownError("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise OverloadedError(f"{len(self._pending)} requests are already waiting; try again shortly")
            self._pending.append(handle)
            self._wakeup.notify()
        return handle

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="lina-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop; unfinished jobs fail with a clear error."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        error = ShuttingDownError("the server is shutting down")
        self._fail_active(error)
        while self._pending:
            self._pending.popleft().finish(error)

    def warm_graphs(self, text_lengths: tuple[int, ...] | None = None, top_k: int = 100) -> int:
        """Capture the step graphs of every batch bucket for these text lengths (default: every
        text bucket up to 256 tokens), so no request pays for a capture (or a compilation). Call
        before serving, after one synthesis has run (which allocated the buffers), while the loop
        is idle. Returns the graphs captured."""
        if self.graphed is None or not self.graphed.config.capture:
            return 0
        if text_lengths is None:
            text_lengths = tuple(n for n in self.graphed.config.text_buckets if n <= 256)
        before = self.graphed.graph_count
        for n in text_lengths:
            self.graphed.warm(self.graphed.config.batch_buckets, n, top_k)
        return self.graphed.graph_count - before

    def warm_codec(self) -> int:
        """Capture the streaming codec's window graphs (CUDA; call at start-up while the loop is
        idle). Returns the number of graphs."""
        return self.decoder.capture_graphs(rows=self.max_batch)

    @torch.inference_mode()
    def warm_prefill(self, prompt_frames: int = 75) -> list[int]:
        """Run a prompt prefill at every padded batch size the loop can use, so kernel
        autotuning happens now and not in a client's first request. Call while the loop is
        idle (start-up). Returns the batch sizes warmed."""
        if not self.pad_prefill:
            return []
        sizes, n = [], 1
        while n <= padded_batch(self.max_prefill_batch):
            sizes.append(n)
            n *= 2
        text = torch.full((1, 8), 3, dtype=torch.long, device=self.device)
        audio = torch.full((1, prompt_frames), BOS, dtype=torch.long, device=self.device)
        # as _prepare runs it: the encoder pass at batch 1 (then cached), the rest padded
        encoded, state = self.model.encode_audio(audio, self.model.init_state(1))
        for size in sizes:
            rows = [0] * size
            ctx = self.model.encode_text(text.expand(size, -1))
            self.model.prefill_from_encoded(ctx, encoded[rows], state.select(rows))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return sizes

    @property
    def load(self) -> tuple[int, int]:
        """(active rows, waiting jobs)."""
        return len(self.batch), len(self._pending)

    # --- engine thread -------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stopping:
                with self._wakeup:
                    while not (self._pending or self.batch.rows or self._inflight or self._decodes or self._stopping):
                        self._wakeup.wait(timeout=0.5)
                if self._stopping:
                    break
                self.run_once_safely()

    def run_once_safely(self) -> None:
        """One iteration; a failure never ends the loop (see ``_recover``)."""
        try:
            self.run_once()
            self._good_steps += 1
            if self._good_steps >= 200 and self.max_batch < self._configured_max_batch:
                self.max_batch = min(self._configured_max_batch, 2 * self.max_batch)  # memory came back
                self._good_steps = 0
        except Exception as err:
            self._recover(err)

    def _recover(self, err: Exception) -> None:
        """Out of GPU memory: fail only the newest half of the rows (the oldest keep their
        progress) and admit fewer rows for a while. Any other failure: fail the active rows."""
        try:  # steps already queued ran on the GPU (states advanced): their tokens belong to the rows
            self._flush_inflight()
        except Exception:  # noqa: BLE001 (they failed too: nothing to keep)
            self._inflight.clear()
        self._good_steps = 0
        rows = [r for r in self.batch.rows if not r.ended]
        if isinstance(err, torch.OutOfMemoryError) and len(rows) > 1:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            survivors = len(rows) // 2
            self.max_batch = max(1, survivors)
            _LOGGER.warning(
                "out of GPU memory with %d rows: failing the newest %d, admitting at most %d for now",
                len(rows), len(rows) - survivors, self.max_batch,
            )  # fmt: skip
            overloaded = OverloadedError("the GPU ran out of memory; try again shortly")
            for row in rows[survivors:]:
                row.end_step = self.steps
                row.handle.finish(overloaded)
            self.batch.keep([i for i, row in enumerate(self.batch.rows) if not row.ended])
            return
        _LOGGER.exception("generation step failed; failing %d active rows", len(self.batch), exc_info=err)
        self._fail_active(SynthesisError(f"generation failed: {err}"))

    def _fail_active(self, error: Exception) -> None:
        """Fail every row in the batch or with audio still decoding; forget their bookkeeping."""
        for row in self.batch.rows:
            row.handle.finish(error)
        for item in self._decodes:
            for row in item if isinstance(item, list) else [job[0] for job in item.jobs]:
                row.handle.finish(error)
        self.batch = ActiveBatch()
        self._inflight.clear()
        self._log.clear()
        self._due.clear()
        self._decodes.clear()
        self.decoder.drop_pending()

    @torch.inference_mode()
    def run_once(self) -> None:
        """One iteration of the loop (called by the thread; tests may call it directly)."""
        self._hand_out_audio()
        self._drop_finished_or_cancelled()
        self._admit()
        if self.batch.rows and self.steps < self._limit_step:
            self._step()
        elif self.batch.rows:  # every row meets its frame limit in a step already queued: launch no more
            self._flush_inflight()
        else:
            self._flush_inflight()
            self._flush_log()  # only the discarded extra steps of ended rows can be left
            self._hand_out_audio(wait=True)

    def _note_cancel(self) -> None:
        self._cancel_seen = True

    def _drop_finished_or_cancelled(self) -> None:
        """Drop cancelled and overdue rows. The scan runs only after a cancel() or once the
        earliest deadline has passed: at hundreds of rows a scan every step costs real time."""
        now = time.monotonic()
        if not (self._cancel_seen or now > self._next_deadline):
            return
        self._cancel_seen = False
        keep, leaving = [], []
        for i, row in enumerate(self.batch.rows):
            job = row.handle.job
            if row.ended:
                continue
            if row.handle.cancelled:
                leaving.append((row, None))
            elif job.deadline is not None and now > job.deadline:
                leaving.append((row, DeadlineExceededError("the request took longer than its deadline")))
            else:
                keep.append(i)
        self.batch.keep(keep)  # rows leave the batch before their callers hear they ended
        for row, error in leaving:
            row.handle.finish(error)
        self._next_deadline = min((r.handle.job.deadline for r in self.batch.rows if r.handle.job.deadline), default=math.inf)

    def _admit(self) -> None:
        room = min(self.max_batch - len(self.batch), self.max_admit_per_step)
        handles = []
        with self._wakeup:
            while self._pending and len(handles) < room:
                handle = self._pending.popleft()
                if handle.cancelled:
                    handle.finish()
                else:
                    handles.append(handle)
        by_length: dict[int, list[JobHandle]] = collections.defaultdict(list)
        for handle in handles:  # one voice = one prompt length: its requests prefill together
            by_length[_prompt_length(handle.job)].append(handle)
        groups = []
        for length, group in by_length.items():
            size = self.max_prefill_batch if length else len(group)  # (no prompt: no prefill)
            groups += [group[i : i + size] for i in range(0, len(group), size)]
        for group in groups:
            try:
                self._start(group)
            except Exception as err:
                if len(group) == 1:
                    self._fail_start(group[0], err)
                    continue
                for handle in group:  # find the bad one: the others still start
                    try:
                        self._start([handle])
                    except Exception as single_err:
                        self._fail_start(handle, single_err)

    @staticmethod
    def _fail_start(handle: JobHandle, err: Exception) -> None:
        _LOGGER.error("could not start a job: %s", err, exc_info=err)
        handle.finish(err if isinstance(err, SynthesisError) else SynthesisError(f"could not start: {err}"))

    def _start(self, handles: list[JobHandle]) -> None:
        added = self._prepare(handles)
        self.batch.extend(added)
        now = time.monotonic()
        first_window = self.decoder.config.first_window
        for row in added.rows:
            if row.handle.job.deadline is not None:
                self._next_deadline = min(self._next_deadline, row.handle.job.deadline)
            row.handle.stats.started = now
            row.first_step = self.steps + 1  # the next step samples its first token
            self._due[row.first_step + first_window - 1].append(row)  # its first audio is decodable
            self._due[row.first_step + row.handle.job.max_frames - 1].append(row)  # its frame limit
            self._limit_step = max(self._limit_step, row.first_step + row.handle.job.max_frames - 1)

    def _prepare(self, handles: list[JobHandle]) -> ActiveBatch:
        """Encode the texts and prefill the voice prompts (all of one length) in ONE parallel pass."""
        model, dev = self.model, self.device
        jobs = [h.job for h in handles]
        n = max(len(j.text_ids) for j in jobs)
        text = np.zeros((len(jobs), n), dtype=np.int64)
        for i, job in enumerate(jobs):
            text[i, : len(job.text_ids)] = job.text_ids
        # every host -> GPU copy here is queued without a sync (transfer.py): steps may be queued
        text = to_device(text, dev)
        lengths = to_device([len(job.text_ids) for job in jobs], dev, torch.long)
        mask = torch.arange(n, device=dev)[None, :] < lengths[:, None]
        ctx = model.encode_text(text, mask)
        if not _prompt_length(jobs[0]):  # one initial state per run of requests with the same voice
            runs = [list(g) for _, g in itertools.groupby(jobs, key=lambda job: id(job.initial_state))]
            state = LinaState.cat([model.init_state(len(run), run[0].initial_state) for run in runs])
            next_tokens = torch.full((len(jobs),), BOS, dtype=torch.long, device=dev)
        else:  # the voice's cached encoder pass starts from its initial state
            encoded, states = zip(*(self._encoded_prompt(job) for job in jobs))
            encoded, state = torch.cat(encoded), LinaState.cat(list(states))
            n = len(jobs)
            size = padded_batch(n) if self.pad_prefill else n
            if size == n:
                state = model.prefill_from_encoded(ctx, encoded, state)
            else:  # padding rows repeat the last one; their results are dropped
                rows = list(range(n)) + [n - 1] * (size - n)
                state = model.prefill_from_encoded(ctx.select(rows), encoded[rows], state.select(rows))
                state = state.select(slice(0, n))
            last = torch.stack([job.prompt_codes[-1] for job in jobs]).long()
            next_tokens = to_device(last, dev) + N_SPECIAL_AUDIO
        seeds = [j.sampling.seed if j.sampling.seed is not None else random.getrandbits(62) for j in jobs]
        ints = to_device([[j.sampling.top_k for j in jobs], seeds, [j.min_frames for j in jobs]], dev, torch.long)
        floats = to_device([[j.sampling.top_p for j in jobs], [j.sampling.temperature for j in jobs]], dev, torch.float32)
        return ActiveBatch(
            rows=[Row(handle=h, seed=seed, decoder=self.decoder.open()) for h, seed in zip(handles, seeds)],
            ctx=ctx,
            state=state,
            next_tokens=next_tokens,
            counters=torch.zeros(len(jobs), dtype=torch.long, device=dev),
            top_k=ints[0],
            top_p=floats[0],
            temperature=floats[1],
            seeds=ints[1],
            min_frames=ints[2],
        )

    def _encoded_prompt(self, job: GenerationJob) -> tuple[torch.Tensor, LinaState]:
        """The encoder pass over a voice prompt ([BOS, codes[:-1]]): it does not depend on the
        text, so it is computed once per voice (prompt tensor and initial state, by identity;
        voices are immutable and the cache holds them) and reused by every request."""
        key = (id(job.prompt_codes), id(job.initial_state))
        hit = self._prompt_cache.get(key)
        if hit is not None:
            self._prompt_cache.move_to_end(key)
            return hit[2], hit[3]
        codes = to_device(job.prompt_codes, self.device, torch.long) + N_SPECIAL_AUDIO
        inputs = torch.cat([torch.full_like(codes[:1], BOS), codes[:-1]])[None]
        encoded, state = self.model.encode_audio(inputs, self.model.init_state(1, job.initial_state))
        self._prompt_cache[key] = (job.prompt_codes, job.initial_state, encoded, state)
        while len(self._prompt_cache) > self.prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        return encoded, state

    def _step(self) -> None:
        b = self.batch
        rows = b.rows  # replaced, never mutated, when rows join or leave: safe to keep
        if self.graphed is None:
            logits, b.state = self.model.step(b.ctx, b.next_tokens, b.state)
            tokens = sample_tokens(logits, b.top_k, b.top_p, b.temperature, b.seeds, b.counters, b.max_k, b.min_frames)
            b.next_tokens = tokens
            b.counters = b.counters + 1
            self.steps += 1
            self._process(self.steps, rows, tokens.cpu().numpy())  # the one host sync per step
            return
        # Graphed: launch this step, then process the oldest queued step's tokens while the GPU
        # works (see pipeline_depth).
        tokens = self.graphed(b)  # state, tokens and counters updated in place
        self.steps += 1
        slot = self._host_tokens[self.steps % len(self._host_tokens)][: len(rows)]
        slot.copy_(tokens, non_blocking=True)
        event = torch.cuda.Event() if tokens.is_cuda else None
        if event is not None:
            event.record()
        self._inflight.append((self.steps, rows, slot, event))
        while len(self._inflight) > self.queued_steps(len(rows)):
            self._finish_inflight(self._inflight.popleft())

    def queued_steps(self, rows: int) -> int:
        """How many launched steps may wait for the host: at most ``pipeline_depth``, and at
        small batch no more than 4 (a step is short there and the host keeps up; every queued
        step delays noticing a row's first window or EOS by one step)."""
        return min(self.pipeline_depth, max(4, rows // self.rows_per_queued_step))

    def _flush_inflight(self) -> None:
        while self._inflight:
            self._finish_inflight(self._inflight.popleft())

    def _finish_inflight(self, inflight) -> None:
        step, rows, slot, event = inflight
        if event is not None:
            event.synchronize()
        self._process(step, rows, slot.numpy().copy())

    def _process(self, step: int, rows: list[Row], tokens: np.ndarray) -> None:
        """Record one step's tokens; end rows at EOS or their frame limit; when rows end, reach
        their first audio, or every ``decode_interval`` steps, hand the logged tokens to the rows
        and launch the codec windows that became decodable."""
        self._log.append((step, rows, tokens))
        ended, first = [], []
        for i in np.flatnonzero(tokens == EOS).tolist():
            row = rows[i]
            if row.end_step is None:  # not the extra step of a row that already ended
                self._end(row, step, "eos")
                ended.append(row)
        for row in self._due.pop(step, ()):
            if row.end_step is not None or row.handle.done:
                continue
            if step - row.first_step + 1 >= row.handle.job.max_frames:
                self._end(row, step, "max_frames")
                ended.append(row)
            else:
                first.append(row)
        periodic = step % self.decode_interval == 0
        if not (periodic or ended or first):
            return
        self._flush_log()
        due = [row for row in rows if not row.handle.done] if periodic else first + ended
        jobs = self.decoder.windows((row, row.decoder, row.ended) for row in due)
        if jobs:
            self._decodes.extend(self.decoder.launch(jobs))
        if ended:  # leave the batch now; their callers hear the end after their last audio
            self.batch.keep([i for i, row in enumerate(self.batch.rows) if not row.ended])
            self._decodes.append(ended)
        self._hand_out_audio()

    @staticmethod
    def _end(row: Row, step: int, reason: str) -> None:
        row.end_step = step
        row.handle.stats.stop_reason = reason

    def _flush_log(self) -> None:
        """Hand every logged token to its row (stats) and its codes to the row's codec stream.
        Steps with the same rows are stacked, so the Python work is per row, not per step."""
        log, self._log = self._log, []
        i = 0
        while i < len(log):
            first_step, rows, _ = log[i]
            j = i + 1
            while j < len(log) and log[j][1] is rows:
                j += 1
            tokens = np.stack([t for _, _, t in log[i:j]], axis=1)  # [rows, steps]
            as_lists = tokens.tolist()
            codes = torch.from_numpy(tokens - N_SPECIAL_AUDIO)  # PAD/BOS are never sampled; EOS is never pushed
            for r, row in enumerate(rows):
                if row.handle.done:  # cancelled, failed or dropped
                    continue
                n = j - i if row.end_step is None else min(j - i, row.end_step - first_step + 1)
                if n <= 0:
                    continue
                own = as_lists[r][:n]
                row.handle.stats.tokens.extend(own)
                if own[-1] == EOS:  # only ever its last token
                    n -= 1
                if n:
                    row.decoder.push(codes[r, :n])
                    row.frames += n
            i = j

    def _hand_out_audio(self, wait: bool = False) -> None:
        """Deliver decoded audio in launch order (all of it if ``wait``; else what is ready) and
        finish the rows whose last audio has gone out."""
        while self._decodes:
            head = self._decodes[0]
            if isinstance(head, list):
                self._decodes.popleft()
                for row in head:
                    row.handle.stats.frames = row.frames
                    row.handle.finish()
                continue
            if not (wait or head.ready()):
                return
            self._decodes.popleft()
            deliver_all([(row.handle, audio) for row, audio in head.results() if len(audio)])
