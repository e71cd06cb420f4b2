"""A request while another thread compiles: the engine's first audio against the switch interval.

    python bench/warmup_convoy.py [--fixtures ../shared/fixtures] [--intervals 0.005,0.001,0.0002]

On a GPU's first start (and a restart) the warm-up thread runs ``torch.compile`` for minutes:
Dynamo and Inductor are pure Python, and the engine thread, which releases and retakes the GIL at
every PyTorch call, waits up to ``sys.getswitchinterval()`` for it each time (bench/gil_convoy.py).
On the H200 a request then waited 0.8-10 s for its first audio (docs/benchmarks.md, session 10).

This measures the same situation on a CPU with the real engine: the fixture models (tiny, so a step
is many small PyTorch calls, like the GPU engine's host side), the float32 step, one torch thread,
and a "compiler" thread doing pure Python work without pause. Printed per setting: time to first
audio and the whole request (a fixture sentence, its frame limit 60), and the compiler thread's
rate as a share of its rate alone (what a shorter interval costs the compile).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from wyoming_lina.codec import load_codec  # noqa: E402
from wyoming_lina.engine import Engine, GenerationJob, SamplingOptions, StreamingDecoder  # noqa: E402
from wyoming_lina.engine.settings import EngineSettings  # noqa: E402
from wyoming_lina.model import load_lina  # noqa: E402


class Compiler:
    """A thread of pure Python work (what Dynamo and Inductor are), counting its iterations."""

    def __init__(self):
        self.count, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sum(range(200))
            self.count += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def compiler_rate(seconds: float = 0.5) -> float:
    with Compiler() as c:
        time.sleep(0.1)
        c0, t0 = c.count, time.perf_counter()
        time.sleep(seconds)
        return (c.count - c0) / (time.perf_counter() - t0)


async def requests(engine: Engine, job: GenerationJob, n: int) -> list[tuple[float, float]]:
    out = []
    for _ in range(n):
        started, first = time.perf_counter(), None
        async for _chunk in engine.submit(job):
            if first is None:
                first = time.perf_counter() - started
        out.append((first, time.perf_counter() - started))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=HERE.parent.parent / "shared/fixtures")
    parser.add_argument("--intervals", default="0.005,0.001,0.0002")
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_lina(args.fixtures / "lina-tiny/model.ckpt")
    codec = load_codec(args.fixtures / "wavtokenizer-tiny/config.yaml", args.fixtures / "wavtokenizer-tiny/model.ckpt")
    vec = load_file(str(args.fixtures / "lina-tiny/vectors.safetensors"))
    job = GenerationJob(vec["text_ids"][0].tolist(), max_frames=60, sampling=SamplingOptions(top_k=1, seed=0))
    engine = Engine(model, StreamingDecoder(codec), EngineSettings(cpu_quant="none"))
    engine.start()
    default = sys.getswitchinterval()
    try:
        asyncio.run(requests(engine, job, 2))  # first-use costs
        alone_rate = compiler_rate()
        print("| compiler thread | switch interval ms | first audio p50 / max ms | request p50 ms | compiler's rate |")
        print("|---|---|---|---|---|")
        runs = [(None, default)] + [(True, float(v)) for v in args.intervals.split(",")]
        for compiling, interval in runs:
            sys.setswitchinterval(interval)
            try:
                if compiling:
                    with Compiler() as c:
                        c0, t0 = c.count, time.perf_counter()
                        results = asyncio.run(requests(engine, job, args.requests))
                        rate = (c.count - c0) / (time.perf_counter() - t0) / alone_rate
                else:
                    results, rate = asyncio.run(requests(engine, job, args.requests)), None
            finally:
                sys.setswitchinterval(default)
            firsts, totals = [1000 * f for f, _ in results], [1000 * t for _, t in results]
            print(
                f"| {'yes' if compiling else 'no'} | {1000 * interval:g} | {statistics.median(firsts):.0f} / "
                f"{max(firsts):.0f} | {statistics.median(totals):.0f} | {'-' if rate is None else f'{100 * rate:.0f}%'} |",
                flush=True,
            )
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
