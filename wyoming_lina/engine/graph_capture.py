"""Capturing a CUDA graph while another thread uses the same GPU."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def capturing(graph: torch.cuda.CUDAGraph, pool, stream: torch.cuda.Stream):
    """Capture ``graph`` from the work queued on ``stream`` inside the block.

    ``torch.cuda.graph`` does three things before every capture: it synchronizes the whole
    device and empties PyTorch's device and pinned-host caches. During a start-up the engine
    thread captures its plain step's graphs while a second thread compiles and autotunes the
    kernels (hundreds of timed launches): every capture then waited for all of that thread's
    queued work, and the next allocations refilled the emptied caches. Neither is needed for a
    correct capture: the graph records only what is queued on ``stream`` inside the block, into
    its own memory pool, and ``thread_local`` lets other threads go on using the GPU meanwhile."""
    with torch.cuda.stream(stream):
        graph.capture_begin(pool=pool, capture_error_mode="thread_local")
        try:
            yield graph
        except BaseException:
            with contextlib.suppress(RuntimeError):  # (the capture is void anyway; keep the first error)
                graph.capture_end()
            raise
        graph.capture_end()
