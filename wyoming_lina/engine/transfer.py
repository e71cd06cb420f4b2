"""Host -> GPU copies that do not wait for the GPU.

A copy from ordinary (pageable) host memory makes PyTorch synchronise with the stream. With
steps queued ahead of the host (``engine.loop``) one such copy drains the whole queue, and
the GPU then idles while the host catches up: at 256 rows on an H200 each row leaving the
batch cost a 15-25 ms gap (bench/engine_phases.py --timeline-host). From pinned memory the
copy is queued on the stream like a kernel and the host goes on at once.
"""

from __future__ import annotations

import torch


def to_device(values, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """values (list, numpy array or CPU tensor) as a tensor on device, queued without a sync."""
    t = torch.as_tensor(values, dtype=dtype)
    if torch.device(device).type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
