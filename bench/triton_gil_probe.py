"""Does a first-time Triton compile hold the GIL? (CUDA; docs/benchmarks.md, session 8)

    python bench/triton_gil_probe.py

A ticker thread sleeps 5 ms in a loop and records its longest gap while this thread compiles one
of the project's kernels (the codec's group norm) into an empty Triton cache, then a second
variant, then runs it compiled. A gap near the compile time would mean the compile holds the GIL
(and would stall the engine thread while the warm-up thread builds kernels); on the H200 the
first compile took 24 s and the longest gap was 68 ms.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp()  # before triton is imported: nothing cached

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wyoming_lina.codec.triton_groupnorm import group_norm_time  # noqa: E402


def main() -> None:
    gaps: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    threading.Thread(target=tick, daemon=True).start()
    x = torch.randn(2, 37, 768, device="cuda")
    weight, bias = torch.ones(768, device="cuda"), torch.zeros(768, device="cuda")
    for what, silu in (("first compile", False), ("second variant compile", True), ("compiled", True)):
        gaps.clear()
        started = time.perf_counter()
        group_norm_time(x, 1, weight, bias, 1e-6, silu)
        torch.cuda.synchronize()
        took = time.perf_counter() - started
        print(
            f"{what}: {took:.2f} s, the ticker's longest gap {max(gaps, default=0) * 1000:.0f} ms over {len(gaps)} ticks"
        )
    stop.set()


if __name__ == "__main__":
    main()
