"""Host <-> GPU copies that do not wait for the GPU, and pinned memory for them.

A copy from ordinary (pageable) host memory makes PyTorch synchronise with the stream. With
steps queued ahead of the host (``engine.loop``) one such copy drains the whole queue, and
the GPU then idles while the host catches up: at 256 rows on an H200 each row leaving the
batch cost a 15-25 ms gap (bench/engine_phases.py --timeline-host). From pinned memory the
copy is queued on the stream like a kernel and the host goes on at once.
"""

from __future__ import annotations

import collections
import math

import torch


def to_device(values, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """values (list, numpy array or CPU tensor) as a tensor on device, queued without a sync."""
    t = torch.as_tensor(values, dtype=dtype)
    if torch.device(device).type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class StagingRing:
    """Pinned host memory for GPU -> host copies that are consumed in the order they were made.

    Allocating pinned memory (``cudaHostAlloc``) takes milliseconds per call and holds up the
    thread that asks: in a first 256-stream round the codec's copies made 43 such calls, 122 ms
    in all, up to 17 ms each (bench/engine_phases.py --cold --timeline-host). The codec's audio
    is handed out in launch order, so one buffer allocated at start-up serves as a ring: each
    copy takes the bytes after the newest region in use, and the oldest region is given back
    first. ``alloc`` returns None when the ring is full (the caller then allocates as before).
    """

    ALIGN = 64  # bytes: any dtype's view of a region starts aligned

    def __init__(self, nbytes: int, pin: bool = True):
        self.buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
        self._live: collections.deque[tuple[int, int]] = collections.deque()  # (start, end), oldest first
        self.misses = 0  # allocations that did not fit

    @property
    def in_use(self) -> int:
        return len(self._live)

    def alloc(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, tuple[int, int]] | None:
        """A tensor of ``shape`` and ``dtype`` in the ring and its region (for ``release``), or None."""
        nbytes = math.prod(shape) * dtype.itemsize
        padded = -(-nbytes // self.ALIGN) * self.ALIGN
        start = self._place(padded)
        if start is None:
            self.misses += 1
            return None
        region = (start, start + padded)
        self._live.append(region)
        return self.buffer[start : start + nbytes].view(dtype).view(shape), region

    def _place(self, nbytes: int) -> int | None:
        size = self.buffer.numel()
        if not self._live:
            return 0 if nbytes <= size else None
        oldest, newest = self._live[0][0], self._live[-1][1]
        if newest > oldest:  # in use: [oldest, newest); free: [newest, size) and [0, oldest)
            if newest + nbytes <= size:
                return newest
            return 0 if nbytes <= oldest else None
        return newest if newest + nbytes <= oldest else None  # wrapped: free is [newest, oldest)

    def release(self, region: tuple[int, int]) -> None:
        """Give back the oldest region (regions are released in the order they were allocated)."""
        if not self._live or self._live[0] != region:
            raise ValueError(f"release {region} out of order (oldest in use: {self._live[0] if self._live else None})")
        self._live.popleft()

    def rollback(self, region: tuple[int, int]) -> None:
        """Give back the newest region (a copy that was never queued, or whose consumer was
        never made)."""
        if not self._live or self._live[-1] != region:
            raise ValueError(f"rollback {region} is not the newest region")
        self._live.pop()

    def reset(self) -> None:
        """Forget every region (their consumers were dropped). Copies still queued write into
        memory that new copies, queued after them on the same stream, overwrite in order."""
        self._live.clear()
