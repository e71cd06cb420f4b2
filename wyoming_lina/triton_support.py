"""Whether Triton can be used: the model's and the codec's CUDA kernels both ask."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether Triton can be imported (it ships with CUDA builds of torch, not CPU ones). Call it
    only for CUDA work: it imports triton, which the CPU path never does."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True
