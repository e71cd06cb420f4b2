"""The generation loop: one thread per device owns the model and the codec.

Each iteration: drop cancelled or overdue rows -> admit waiting jobs (text encoding and ONE
parallel prompt prefill each) -> one batched decode step for every active row -> sample ->
stream newly decodable audio of all rows in one batched codec call -> retire finished rows.
Callers talk to it only through ``submit`` (thread-safe) and their ``JobHandle``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time

import torch

from ..errors import DeadlineExceededError, OverloadedError, SynthesisError, UnsupportedTextError
from ..model import BOS, EOS, N_SPECIAL_AUDIO, LinaModel, LinaState
from ..model.kernels import triton_available
from .batch import ActiveBatch, Row
from .decoding import StreamingDecoder
from .graphed_step import GraphConfig, GraphedStep
from .job import GenerationJob, JobHandle
from .sampling import sample_tokens

_LOGGER = logging.getLogger(__name__)


def _prompt_length(job: GenerationJob) -> int:
    return 0 if job.prompt_codes is None else len(job.prompt_codes)


def engine_options(device_type: str, *, compile: bool = True) -> dict:
    """How the loop runs on this device: CUDA replays graphed steps (one Triton kernel per GLA
    layer), batches codec decodes over 16 steps (213 ms of audio; a row's first audio is decoded
    as soon as it is ready) and pads prefill batches; the CPU runs the plain step and decodes
    every step."""
    if device_type == "cuda":
        kernel = "fused_step" if triton_available() else "naive"
        return {"graphs": GraphConfig(compile=compile, kernel=kernel), "decode_interval": 16, "pad_prefill": True}
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
        graphs: GraphConfig | None = None,
        decode_interval: int = 1,
        pad_prefill: bool = False,
    ):
        self.model = model
        self.decoder = decoder
        self.device = model.device
        self.max_batch = max_batch
        self._configured_max_batch = max_batch
        self._good_steps = 0
        self.max_queue = max_queue
        self.max_admit_per_step = max_admit_per_step
        self.batch = ActiveBatch()
        self._pending: collections.deque[JobHandle] = collections.deque()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.steps = 0
        self.decode_interval = decode_interval  # batch streaming decodes over this many steps
        self.pad_prefill = pad_prefill  # prefill batches padded to powers of two (see padded_batch)
        # encoder half of each voice prompt's prefill (text-independent), most recent last
        self._prompt_cache: collections.OrderedDict[tuple[int, int], tuple] = collections.OrderedDict()
        self.prompt_cache_size = 32
        self.graphed = GraphedStep(model, graphs) if graphs is not None else None
        self._inflight = None  # graphed: (rows, host tokens, event) of the step still to process
        if self.graphed is not None:
            self.max_batch = self._configured_max_batch = min(max_batch, self.graphed.capacity)
            pin = self.device.type == "cuda"
            self._host_tokens = [
                torch.zeros(self.graphed.capacity, dtype=torch.long, pin_memory=pin) for _ in range(2)
            ]

    # --- caller side ---------------------------------------------------------------------
    def submit(self, job: GenerationJob, loop: asyncio.AbstractEventLoop | None = None) -> JobHandle:
        """Queue a job; raises OverloadedError when the queue is full."""
        handle = JobHandle(job, loop or asyncio.get_running_loop())
        if len(job.text_ids) > self.model.config.max_text_len:
            raise UnsupportedTextError(
                f"text of {len(job.text_ids)} tokens is longer than the model's {self.model.config.max_text_len}"
            )
        with self._wakeup:
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
        error = SynthesisError("the server is shutting down")
        for row in self.batch.rows:
            row.handle.finish(error)
        while self._pending:
            self._pending.popleft().finish(error)
        self.batch = ActiveBatch()

    def warm_graphs(self, text_lengths: tuple[int, ...] = (64, 128), top_k: int = 100) -> int:
        """Capture the step graphs of every batch bucket for these text lengths, so no request
        pays for a capture (or a compilation). Call before serving, after one synthesis has run
        (which allocated the buffers), while the loop is idle. Returns the graphs captured."""
        if self.graphed is None or not self.graphed.config.capture:
            return 0
        before = self.graphed.graph_count
        for n in text_lengths:
            self.graphed.warm(self.graphed.config.batch_buckets, n, top_k)
        return self.graphed.graph_count - before

    @torch.inference_mode()
    def warm_prefill(self, prompt_frames: int = 75) -> list[int]:
        """Run a prompt prefill at every padded batch size the loop can use, so kernel
        autotuning happens now and not in a client's first request. Call while the loop is
        idle (start-up). Returns the batch sizes warmed."""
        if not self.pad_prefill:
            return []
        sizes, n = [], 1
        while n <= padded_batch(self.max_admit_per_step):
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
                    while not (self._pending or self.batch.rows or self._inflight or self._stopping):
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
        self._inflight = None
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
                row.ended = True
                row.handle.finish(overloaded)
            self.batch.keep([i for i, row in enumerate(self.batch.rows) if not row.ended])
            return
        _LOGGER.exception("generation step failed; failing %d active rows", len(self.batch), exc_info=err)
        for row in self.batch.rows:
            row.handle.finish(SynthesisError(f"generation failed: {err}"))
        self.batch = ActiveBatch()

    @torch.inference_mode()
    def run_once(self) -> None:
        """One iteration of the loop (called by the thread; tests may call it directly)."""
        self._drop_finished_or_cancelled()
        self._admit()
        if self.batch.rows:
            self._step()
        else:
            self._flush_inflight()

    def _drop_finished_or_cancelled(self) -> None:
        now = time.monotonic()
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
        groups: dict[int, list[JobHandle]] = collections.defaultdict(list)
        for handle in handles:  # one voice = one prompt length: its requests prefill together
            groups[_prompt_length(handle.job)].append(handle)
        for group in groups.values():
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
        self.batch.extend(self._prepare(handles))
        now = time.monotonic()
        for handle in handles:
            handle.stats.started = now

    def _prepare(self, handles: list[JobHandle]) -> ActiveBatch:
        """Encode the texts and prefill the voice prompts (all of one length) in ONE parallel pass."""
        model, dev = self.model, self.device
        jobs = [h.job for h in handles]
        n = max(len(j.text_ids) for j in jobs)
        text = torch.zeros(len(jobs), n, dtype=torch.long)
        mask = torch.zeros(len(jobs), n, dtype=torch.bool)
        for i, job in enumerate(jobs):
            text[i, : len(job.text_ids)] = torch.tensor(job.text_ids)
            mask[i, : len(job.text_ids)] = True
        ctx = model.encode_text(text.to(dev), mask.to(dev))
        if not _prompt_length(jobs[0]):
            state = LinaState.cat([model.init_state(1, job.initial_state) for job in jobs])
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
            next_tokens = last.to(dev) + N_SPECIAL_AUDIO
        seeds = [j.sampling.seed if j.sampling.seed is not None else random.getrandbits(62) for j in jobs]
        return ActiveBatch(
            rows=[Row(handle=h, seed=seed, decoder=self.decoder.open()) for h, seed in zip(handles, seeds)],
            ctx=ctx,
            state=state,
            next_tokens=next_tokens,
            counters=torch.zeros(len(jobs), dtype=torch.long, device=dev),
            top_k=torch.tensor([j.sampling.top_k for j in jobs], device=dev),
            top_p=torch.tensor([j.sampling.top_p for j in jobs], device=dev),
            temperature=torch.tensor([j.sampling.temperature for j in jobs], device=dev),
            seeds=torch.tensor(seeds, dtype=torch.long, device=dev),
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
        codes = job.prompt_codes.long().to(self.device) + N_SPECIAL_AUDIO
        inputs = torch.cat([torch.full_like(codes[:1], BOS), codes[:-1]])[None]
        encoded, state = self.model.encode_audio(inputs, self.model.init_state(1, job.initial_state))
        self._prompt_cache[key] = (job.prompt_codes, job.initial_state, encoded, state)
        while len(self._prompt_cache) > self.prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        return encoded, state

    def _step(self) -> None:
        b = self.batch
        if self.graphed is None:
            logits, b.state = self.model.step(b.ctx, b.next_tokens, b.state)
            tokens = sample_tokens(logits, b.top_k, b.top_p, b.temperature, b.seeds, b.counters, b.max_k)
            b.next_tokens = tokens
            b.counters = b.counters + 1
            self.steps += 1
            self._process(list(b.rows), tokens.tolist())  # the one host sync per step
            return
        # Graphed: launch this step, then process the previous step's tokens while the GPU
        # works. A row that ended at step t runs step t + 1 too; that token is ignored.
        rows = list(b.rows)
        tokens = self.graphed(b)  # state, tokens and counters updated in place
        self.steps += 1
        slot = self._host_tokens[self.steps % 2][: len(rows)]
        slot.copy_(tokens, non_blocking=True)
        event = torch.cuda.Event() if tokens.is_cuda else None
        if event is not None:
            event.record()
        previous, self._inflight = self._inflight, (rows, slot, event)
        if previous is not None:
            self._finish_inflight(previous)

    def _flush_inflight(self) -> None:
        if self._inflight is not None:
            previous, self._inflight = self._inflight, None
            self._finish_inflight(previous)

    def _finish_inflight(self, inflight) -> None:
        rows, slot, event = inflight
        if event is not None:
            event.synchronize()
        self._process(rows, slot.tolist())

    def _process(self, rows: list[Row], tokens: list[int]) -> None:
        """Record one step's tokens, stream the audio that became decodable, retire ended rows."""
        ended = []
        for row, token in zip(rows, tokens):
            if row.ended:  # ended at an earlier step (graphed: one step of lag)
                continue
            row.handle.stats.tokens.append(token)
            if token == EOS:
                row.handle.stats.stop_reason = "eos"
            else:
                row.frames += 1
                row.pending.append(max(token - N_SPECIAL_AUDIO, 0))  # specials -> code 0 (as upstream)
                if row.frames >= row.handle.job.max_frames:
                    row.handle.stats.stop_reason = "max_frames"
            if row.handle.stats.stop_reason:
                row.ended = True
                ended.append(row)
        periodic = self.steps % self.decode_interval == 0
        due = [(row, row.ended) for row in rows if not row.handle.done and (periodic or row.ended or not row.audible)]
        for row, _ in due:
            if row.pending:
                self.decoder.push(row.decoder, row.pending)
                row.pending = []
        for row, audio in self.decoder.decode(due, lambda row: row.decoder):
            if len(audio):
                row.audible = True
                row.handle.deliver(audio)
        if ended:  # leave the batch first: a caller that sees its end sees the engine without it
            self.batch.keep([i for i, row in enumerate(self.batch.rows) if not row.ended])
        for row in ended:
            row.handle.stats.frames = row.frames
            row.handle.finish()
