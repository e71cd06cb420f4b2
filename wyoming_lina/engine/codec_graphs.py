"""Streaming codec windows decoded from CUDA graphs, on the codec's own CUDA stream.

A batched decode of streaming windows is ~300 kernels; launched eagerly from Python it
costs milliseconds of the engine thread, which then does not launch the next LM step. The
windows of a stream sit on a fixed grid (``StreamingConfig``), so all but a stream's last
window have one of a few sizes (``StreamingConfig.grid_sizes``: 36, 60, 108, 204, 300 frames
with the GPU geometry), and with ``final_step`` its last one has one of ``final_sizes`` (every
12 frames; unless the whole utterance is shorter than the first window). Each (batch bucket, window size) is captured
once at start-up and replayed: one launch per group. Any other size is decoded eagerly on
the same stream.

Rows beyond the group in a bucket decode whatever codes were last in the static input;
the decoder never mixes rows of a batch, so their output is simply ignored.
"""

from __future__ import annotations

import logging

import torch

from ..codec import WavTokenizer

_LOGGER = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# last windows of the in-between sizes arrive a few at a time (rows end at different steps)
FINAL_BATCH_BUCKETS = (1, 2, 4, 8, 16)


def capped_buckets(buckets: tuple[int, ...], rows: int) -> tuple[int, ...]:
    """The buckets a batch of at most ``rows`` can use: those below it and the first at or above
    it (graph outputs are memory: none sized for more windows than there can be rows)."""
    kept = tuple(b for b in buckets if b < rows)
    return kept + tuple(b for b in buckets if b >= rows)[:1] or kept


class CodecGraphs:
    """One CUDA graph per (batch bucket, window size); ``run`` replays the right one.

    ``sizes`` (the window grid) get every bucket of ``batch_buckets``; ``final_sizes`` that are
    not also grid sizes (last windows only) the smaller ``final_batch_buckets``: with 18 such sizes,
    buckets up to 64 would hold ~0.5 GB of graph outputs."""

    def __init__(
        self,
        codec: WavTokenizer,
        stream: torch.cuda.Stream,
        sizes: list[int],
        batch_buckets=BATCH_BUCKETS,
        final_sizes=(),
        final_batch_buckets=FINAL_BATCH_BUCKETS,
    ):
        self.codec = codec
        self.cuda_stream = stream
        self.buckets = {size: tuple(final_batch_buckets) for size in final_sizes}
        self.buckets.update({size: tuple(batch_buckets) for size in sizes})
        self.grid = set(sizes)
        self.sizes = sorted(self.buckets)
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._pool = None

    def max_batch(self, size: int) -> int:
        """Most windows of this size one replay decodes (64 for a size without graphs: the
        eager decode's batch)."""
        return self.buckets[size][-1] if size in self.buckets else 64

    def __len__(self) -> int:
        return len(self._graphs)

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._graphs

    def bucket(self, n: int, size: int) -> int | None:
        return next((b for b in self.buckets.get(size, ()) if b >= n), None)

    def keys(self) -> list[tuple[int, int]]:
        """Every (batch bucket, window size) this decoder replays, the most used first (the
        grid's small buckets), so a warm-up captured piece by piece helps early."""
        keys = [(b, size) for size in self.sizes for b in self.buckets[size]]
        return sorted(keys, key=lambda k: (k[1] not in self.grid, k[0], k[1]))

    @torch.inference_mode()
    def capture(self, key: tuple[int, int]) -> bool:
        """Capture one (bucket, size) graph unless it exists; whether it was captured now."""
        if key in self._graphs:
            return False
        self._graphs[key] = self._capture(*key)
        return True

    @torch.inference_mode()
    def capture_all(self) -> int:
        """Capture every (bucket, size) graph not yet captured; returns how many exist."""
        for key in self.keys():
            self.capture(key)
        return len(self._graphs)

    def _capture(self, batch: int, size: int):
        codes = torch.zeros(batch, size, dtype=torch.long, device=self.codec.device)
        self.cuda_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.cuda_stream):  # warm-up outside the graph (cuDNN/cuBLAS choices, allocations)
            self.codec.decode(codes, check=False)
        self.cuda_stream.synchronize()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads' CUDA work (a background compilation) may go on meanwhile
        with torch.cuda.graph(graph, pool=self._pool, stream=self.cuda_stream, capture_error_mode="thread_local"):
            audio = self.codec.decode(codes, check=False)
        _LOGGER.debug("captured codec window graph B=%d T=%d", batch, size)
        return graph, codes, audio

    def run(self, codes: torch.Tensor) -> torch.Tensor | None:
        """codes [n, size] (pinned host or device) -> device audio [n, hop * size], enqueued on the
        codec stream (call under ``torch.cuda.stream(self.cuda_stream)``); None if no graph fits."""
        n, size = codes.shape
        b = self.bucket(n, size)
        entry = self._graphs.get((b, size)) if b is not None else None
        if entry is None:
            return None
        graph, static_codes, audio = entry
        static_codes[:n].copy_(codes, non_blocking=True)
        graph.replay()
        return audio[:n]
