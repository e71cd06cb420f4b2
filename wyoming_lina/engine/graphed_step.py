"""The decode step for the whole batch, replayed from CUDA graphs.

A step at batch 1 is ~100 small kernels; launched from Python they cost milliseconds, while
the GPU work is tens of microseconds. So the step (model + sampling + in-place state update)
is captured once per (batch bucket, text-length bucket) and replayed. Every graph reads and
writes one set of static buffers sized for the largest bucket, and the ``ActiveBatch``
tensors are views into them, so a step costs one replay plus reading the sampled tokens.
When rows join or leave, the batch's (new) tensors are copied into the buffers once.

With ``capture=False`` (CPU, tests) the same buffers and code run eagerly.

Compiling the step (``torch.compile``) takes minutes on a first start; a server therefore
serves with an uncompiled twin's graphs (captured in milliseconds) while ``precompile`` compiles
this one on another thread, then captures its graphs one by one and switches (engine/runner.py).

Before that, on a first start, the engine thread defers Triton kernels while they are built
(``triton_support.defer_kernels_here``): the step then runs in plain PyTorch, ~1,000 kernel
launches from Python per step (~12 ms on an H200, barely faster than real time). Those plain ops
need nothing built, so they are captured too (``_plain_graphs``, keyed like the others, in a
memory pool of their own), and dropped with their pool as soon as the kernels are in use.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from ..defaults import MAX_TEXT_TOKENS
from ..model import LinaModel, LinaState, TextContext
from ..model.gla import GLAState
from ..triton_support import kernels_deferred
from .batch import ActiveBatch
from .sampling import sample_tokens

_LOGGER = logging.getLogger(__name__)


def bucket(n: int, sizes: tuple[int, ...]) -> int:
    """Smallest bucket >= n (the largest if n exceeds them all)."""
    for size in sizes:
        if size >= n:
            return size
    raise ValueError(f"{n} exceeds the largest bucket {sizes[-1]}")


@dataclass(frozen=True)
class GraphConfig:
    # no bucket of 1: compiled for exactly one row, the step specialises into GEMV kernels that
    # measured slower (0.60 ms on an H200) than the general code at 2 rows with one padding row
    batch_buckets: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256)
    # the cross-attention reads [B, bucket, 1024] keys, values and positions every step (bf16 on a
    # GPU: at batch 256 and 128 tokens that is 268 MB): buckets close to the real text length pay off
    text_buckets: tuple[int, ...] = (32, 64, 96, 128, 192, 256, 384, MAX_TEXT_TOKENS)
    top_k_buckets: tuple[int, ...] = (128, 1024)
    capture: bool = True  # False: run the same code eagerly (CPU)
    compile: bool = False  # fuse the step with torch.compile before capturing (slow first capture)


class GraphedStep:
    def __init__(self, model: LinaModel, config: GraphConfig = GraphConfig()):
        self.model = model
        self.config = config
        self.capacity = config.batch_buckets[-1]
        self.max_text = config.text_buckets[-1]
        self._buffers: dict | None = None
        self._graphs: dict[tuple[int, int, int], torch.cuda.CUDAGraph] = {}
        self._plain_graphs: dict[tuple[int, int, int], torch.cuda.CUDAGraph] = {}  # kernels deferred
        self._plain_pool = None  # theirs (a pool whose graphs are all gone cannot take new ones)
        self._pool = None
        self._stream = None  # where this step's graphs are captured (_side_stream)
        self._bound: int | None = None  # the batch generation the buffers hold (unique per process)
        self._compute = self._compute_step
        if config.compile:
            # dynamic sizes: one compilation serves every batch/text bucket (batch 1 is specialised)
            self._compute = torch.compile(self._compute_step, dynamic=True)

    # --- buffers ---------------------------------------------------------------------------
    def allocate(self, template: ActiveBatch) -> None:
        """Allocate the static buffers for batches like ``template`` (once)."""
        if self._buffers is None:
            self._buffers = self._alloc(template)

    def allocate_like(self, other: GraphedStep) -> None:
        """Allocate buffers shaped as ``other``'s (a twin that will take over its batches)."""
        if self._buffers is None:
            b = other._buffers
            self._buffers = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in b.items() if k != "state"}
            self._buffers["state"] = [
                GLAState(*(None if t is None else t.clone() for t in layer)) for layer in b["state"]
            ]

    @property
    def allocated(self) -> bool:
        return self._buffers is not None

    def _alloc(self, batch: ActiveBatch) -> dict:
        C, N, dev = self.capacity, self.max_text, batch.next_tokens.device

        def like(t: torch.Tensor, *lead: int) -> torch.Tensor:
            return torch.zeros(*lead, *t.shape[len(lead) :], dtype=t.dtype, device=dev)

        ctx = batch.ctx
        bufs = {
            "keys": torch.zeros(C, N, ctx.keys.shape[2], dtype=ctx.keys.dtype, device=dev),
            "values": torch.zeros(C, N, ctx.values.shape[2], dtype=ctx.values.dtype, device=dev),
            "positions": torch.zeros(C, N, ctx.positions.shape[2], dtype=ctx.positions.dtype, device=dev),
            "mask": torch.zeros(C, N, dtype=torch.bool, device=dev),
            "state": [GLAState(*(None if t is None else like(t, C) for t in layer)) for layer in batch.state.layers],
        }
        for name in ActiveBatch._TENSORS:
            bufs[name] = like(getattr(batch, name), C)
        bufs["mask"][:, 0] = True  # padding rows attend somewhere (no NaN), results ignored
        return bufs

    def _bind(self, batch: ActiveBatch, B: int, N: int) -> None:
        """Copy the batch into the buffers and make its tensors views of them."""
        if self._buffers is None:
            self._buffers = self._alloc(batch)
        b, n, nb = self._buffers, len(batch), batch.ctx.mask.shape[1]
        if nb > self.max_text:
            raise ValueError(f"text of {nb} tokens exceeds the graphed maximum {self.max_text}")
        for name in ("keys", "values", "positions", "mask"):
            b[name][:n, :nb].copy_(getattr(batch.ctx, name))
            b[name][:n, nb:].zero_()
        b["mask"][n:, 0] = True
        for layer_buf, layer in zip(b["state"], batch.state.layers):
            for buf, t in zip(layer_buf, layer):
                if buf is not None:
                    buf[:n].copy_(t)
        for name in ActiveBatch._TENSORS:
            b[name][:n].copy_(getattr(batch, name))
            b[name][n:] = b[name][n - 1]  # padding rows copy a valid row's settings
        batch.ctx = TextContext(b["keys"][:n, :N], b["values"][:n, :N], b["positions"][:n, :N], b["mask"][:n, :N])
        batch.state = LinaState(
            [GLAState(*(None if buf is None else buf[:n] for buf in layer)) for layer in b["state"]]
        )
        for name in ActiveBatch._TENSORS:
            setattr(batch, name, b[name][:n])
        self._bound = batch.generation

    # --- the step ---------------------------------------------------------------------------
    def _step_into_buffers(self, B: int, N: int, K: int) -> None:
        """model.step + sampling on buffer rows [:B], text [:N]; writes state and tokens in place."""
        b = self._buffers
        ctx = TextContext(b["keys"][:B, :N], b["values"][:B, :N], b["positions"][:B, :N], b["mask"][:B, :N])
        state = LinaState([GLAState(*(None if t is None else t[:B] for t in layer)) for layer in b["state"]])
        self._compute(
            ctx,
            state,
            b["next_tokens"][:B],
            b["top_k"][:B],
            b["top_p"][:B],
            b["temperature"][:B],
            b["seeds"][:B],
            b["counters"][:B],
            b["min_frames"][:B],
            K,
        )

    def _compute_step(self, ctx, state, tokens, top_k, top_p, temperature, seeds, counters, min_frames, K: int) -> None:
        """Model step + sampling, writing the new state, tokens and counters in place.

        This is what torch.compile fuses: ``LinaModel.step_in_place`` writes each new state
        straight into its buffer (on CUDA one Triton kernel per GLA layer; elsewhere the plain
        recurrence and a copy, which the compiler fuses into the kernel computing it), so no extra
        pass goes over the [B, H, dk, dv] states, which dominate memory traffic at large batch."""
        logits = self.model.step_in_place(ctx, tokens, state)
        sampled = sample_tokens(logits, top_k, top_p, temperature, seeds, counters, K, min_frames)
        tokens.copy_(sampled)
        counters.add_(1)

    def _capture(self, key: tuple[int, int, int], plain: bool = False) -> torch.cuda.CUDAGraph:
        B, N, K = key
        stream = self._side_stream()
        stream.wait_stream(torch.cuda.current_stream())
        snapshot = self._snapshot()
        with torch.cuda.stream(stream):  # warm-up outside the graph (allocations, autotuning)
            self._step_into_buffers(B, N, K)
        torch.cuda.current_stream().wait_stream(stream)
        self._restore(snapshot)
        graph = torch.cuda.CUDAGraph()
        if plain and self._plain_pool is None:
            self._plain_pool = torch.cuda.graph_pool_handle()
        elif not plain and self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        # thread_local: another thread may compile (and run kernels) while this one captures
        pool = self._plain_pool if plain else self._pool
        with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
            self._step_into_buffers(B, N, K)
        self._restore(snapshot)  # capture ran the step once more; undo it
        _LOGGER.debug("captured decode step graph B=%d N=%d K=%d", B, N, K)
        return graph

    def _side_stream(self) -> torch.cuda.Stream:
        """ONE stream for every warm-up, precompile and capture of this step: cuBLAS keeps a
        workspace for each stream it has run on (32 MiB on Hopper), so a new stream per capture
        held ~0.9 GiB of workspaces for 24 graphs (measured on an H200 with bench/gpu_memory.py)."""
        if self._stream is None:
            self._stream = torch.cuda.Stream()
        return self._stream

    def _snapshot(self):
        b = self._buffers
        return [t.clone() for layer in b["state"] for t in layer if t is not None] + [
            b["next_tokens"].clone(),
            b["counters"].clone(),
        ]

    def _restore(self, snapshot) -> None:
        b = self._buffers
        live = [t for layer in b["state"] for t in layer if t is not None] + [b["next_tokens"], b["counters"]]
        for dst, src in zip(live, snapshot):
            dst.copy_(src)

    def _drop_plain_graphs(self) -> None:
        self._plain_graphs.clear()
        self._plain_pool = None

    @property
    def graph_count(self) -> int:
        return len(self._graphs)

    def release(self) -> None:
        """Free the graphs and buffers now (a twin took over). ``_compute`` refers back to this
        object, so without this the memory would wait for a garbage collection (and after
        ``gc.freeze()`` never come back)."""
        self._graphs.clear()
        self._drop_plain_graphs()
        self._buffers = None
        self._pool = None
        self._compute = None

    def keys_for(self, batch: ActiveBatch) -> tuple[int, int, int]:
        cfg = self.config
        return (
            bucket(len(batch), cfg.batch_buckets),
            bucket(batch.ctx.mask.shape[1], cfg.text_buckets),
            bucket(batch.max_k, cfg.top_k_buckets),
        )

    def keys(self, text_lengths: tuple[int, ...], top_k: int = 100) -> list[tuple[int, int, int]]:
        """Every (batch, text, top-k) bucket for these text lengths, smallest batches first."""
        cfg = self.config
        K = bucket(top_k, cfg.top_k_buckets)
        texts = sorted({bucket(n, cfg.text_buckets) for n in text_lengths})
        return [(B, N, K) for B in cfg.batch_buckets for N in texts]

    @torch.inference_mode()
    def capture(self, key: tuple[int, int, int]) -> bool:
        """Capture the graph of one bucket ahead of traffic (needs buffers); whether it was new."""
        if not self.config.capture or self._buffers is None or key in self._graphs:
            return False
        self._graphs[key] = self._capture(key)
        return True

    def has_graph(self, key: tuple[int, int, int]) -> bool:
        return key in self._graphs

    @torch.inference_mode()
    def precompile(self, keys: list[tuple[int, int, int]]) -> None:
        """Run the (compiled) step once at every bucket on a private stream, without capturing:
        torch.compile compiles then, so a later ``capture`` takes milliseconds. Meant for a thread
        other than the engine's (the engine thread goes on serving); uses only this step's own
        buffers, whose contents do not matter until a batch is bound."""
        if self._buffers is None:
            raise RuntimeError("precompile needs buffers (allocate or allocate_like first)")
        stream = self._side_stream() if self._buffers["next_tokens"].is_cuda else None
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            for key in keys:
                self._step_into_buffers(*key)
        if stream is not None:
            stream.synchronize()

    @torch.inference_mode()
    def warm(self, batch_sizes, text_len: int, top_k: int = 100) -> None:
        """Capture graphs ahead of traffic (needs buffers: call after the first bind)."""
        cfg = self.config
        for B in batch_sizes:
            self.capture(
                (bucket(B, cfg.batch_buckets), bucket(text_len, cfg.text_buckets), bucket(top_k, cfg.top_k_buckets))
            )

    @torch.inference_mode()
    def __call__(self, batch: ActiveBatch) -> torch.Tensor:
        """Advance every row one step; returns the sampled tokens [n] (views of the buffers)."""
        B, N, K = self.keys_for(batch)
        if self._bound != batch.generation or batch.ctx.mask.shape[1] != N:
            self._bind(batch, B, N)
        if not self.config.capture:
            self._step_into_buffers(B, N, K)
            return batch.next_tokens
        plain = kernels_deferred()  # plain PyTorch until the kernels are built: graphs of its own
        if not plain and self._plain_graphs:
            self._drop_plain_graphs()
        graphs = self._plain_graphs if plain else self._graphs
        key = (B, N, K)
        if key not in graphs:
            graphs[key] = self._capture(key, plain)
        graphs[key].replay()
        return batch.next_tokens
