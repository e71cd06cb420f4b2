"""What the GPU did during a stretch of wall time: busy and idle time per CUDA stream.

Used by bench/engine_phases.py --timeline. Records CUDA kernel activity (torch.profiler, no CPU
ops) and summarises it: how long at least one kernel ran, how long the GPU sat idle (and in how
many gaps), each stream's busy time and its most expensive kernels. Where the summed kernel time
is far below the wall, the host (or a wait) is the limit, not the GPU.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
from contextlib import contextmanager


@contextmanager
def recording(host: bool = False):
    """``with recording() as rec: ...`` then ``rec.summary()``. ``host``: also record the CUDA
    runtime calls of the host threads (which ones block, and when), at more profiler overhead."""
    from torch.profiler import ProfilerActivity, profile

    rec = Timeline()
    activities = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if host else [])
    with profile(activities=activities) as prof:
        yield rec
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            rec.load(json.load(f))
    finally:
        os.unlink(path)


def _union(intervals: list[tuple[float, float]], where: list | None = None) -> tuple[float, list[float]]:
    """Total covered time and the gaps between covered stretches (microseconds); ``where``
    collects (gap start, gap length) pairs."""
    busy, gaps, end = 0.0, [], None
    for s, e in sorted(intervals):
        if end is None or s > end:
            if end is not None:
                gaps.append(s - end)
                if where is not None:
                    where.append((end, s - end))
            busy += e - s
            end = e
        elif e > end:
            busy += e - end
            end = e
    return busy, gaps


class Timeline:
    def __init__(self) -> None:
        self.kernels: list[tuple[int, str, float, float]] = []  # stream, name, start, end (us)
        self.runtime: list[tuple[str, float, float]] = []  # CUDA runtime call, start, duration (us)

    def load(self, trace: dict) -> None:
        for ev in trace.get("traceEvents", []):
            if ev.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in ev:
                stream = int(ev.get("args", {}).get("stream", -1))
                self.kernels.append((stream, ev["name"], float(ev["ts"]), float(ev["ts"]) + float(ev["dur"])))
            elif ev.get("cat") in ("cuda_runtime", "cuda_driver") and "dur" in ev:
                self.runtime.append((ev["name"], float(ev["ts"]), float(ev["dur"])))

    def summary(self, top: int = 8) -> list[str]:
        if not self.kernels:
            return ["no kernels recorded"]
        start = min(k[2] for k in self.kernels)
        end = max(k[3] for k in self.kernels)
        span = end - start
        located: list[tuple[float, float]] = []
        busy, gaps = _union([(s, e) for _, _, s, e in self.kernels], located)
        big = [g for g in gaps if g > 20]
        rows = [
            f"GPU span {span / 1e3:.1f} ms: some kernel running {busy / 1e3:.1f} ms ({100 * busy / span:.0f}%), "
            f"idle {(span - busy) / 1e3:.1f} ms in {len(gaps)} gaps ({len(big)} over 20 us, {sum(big) / 1e3:.1f} ms; "
            f"largest {max(gaps, default=0) / 1e3:.2f} ms)",
            "largest idle gaps (ms from the first kernel: ms idle): "
            + ", ".join(
                f"{(at - start) / 1e3:.1f}: {g / 1e3:.2f}" for at, g in sorted(located, key=lambda x: -x[1])[:12]
            ),
            "idle time over 20 us per tenth of the span (ms): "
            + ", ".join(
                f"{sum(g for at, g in located if g > 20 and i <= 10 * (at - start) / span < i + 1) / 1e3:.1f}"
                for i in range(10)
            ),
            "",
            "| stream | kernels | summed kernel ms | busy ms (union) | first / last kernel end (ms from start) |",
            "|---|---|---|---|---|",
        ]
        by_stream: dict[int, list] = collections.defaultdict(list)
        for k in self.kernels:
            by_stream[k[0]].append(k)
        for stream, ks in sorted(by_stream.items(), key=lambda kv: -len(kv[1])):
            total = sum(e - s for _, _, s, e in ks)
            b, _ = _union([(s, e) for _, _, s, e in ks])
            first, last = min(k[2] for k in ks) - start, max(k[3] for k in ks) - start
            rows.append(
                f"| {stream} | {len(ks)} | {total / 1e3:.1f} | {b / 1e3:.1f} | {first / 1e3:.1f} / {last / 1e3:.1f} |"
            )
        if self.runtime:
            calls: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
            for name, _, dur in self.runtime:
                calls[name][0] += 1
                calls[name][1] += dur
            rows += ["", "| CUDA runtime call (host) | calls | total ms |", "|---|---|---|"]
            for name, (n, t) in sorted(calls.items(), key=lambda kv: -kv[1][1])[:8]:
                rows.append(f"| {name} | {n:.0f} | {t / 1e3:.1f} |")
            rows += [
                "",
                "longest runtime calls (ms from the first kernel: call ms): "
                + ", ".join(
                    f"{(ts - start) / 1e3:.1f}: {name} {dur / 1e3:.2f}"
                    for name, ts, dur in sorted(self.runtime, key=lambda r: -r[2])[:12]
                ),
            ]
        for stream, ks in sorted(by_stream.items(), key=lambda kv: -len(kv[1])):
            totals: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
            for _, name, s, e in ks:
                totals[name][0] += 1
                totals[name][1] += e - s
            rows += ["", f"stream {stream}: top kernels", "", "| kernel | calls | ms |", "|---|---|---|"]
            for name, (n, t) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]:
                rows.append(f"| {name[:100]} | {n:.0f} | {t / 1e3:.1f} |")
        return rows
