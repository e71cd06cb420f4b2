"""Why work on the server's event loop costs GPU throughput: the GIL convoy, measured.

    python bench/gil_convoy.py [--intervals 0.005,0.001,0.0005] [--op-size 64] [--same-core]

The engine thread calls PyTorch many times per step (graph replays, copies, launches); each call
releases the GIL and takes it back microseconds later. If the event loop's thread wants the GIL
meanwhile (framing audio, preparing text), it takes it, and the engine thread then waits until
the loop releases it: when the loop blocks in ``select``, or after ``sys.getswitchinterval()``
(5 ms) when it keeps working. So while the loop works, the engine does almost nothing.

Here a thread stands in for the engine (tiny in-place torch ops, each releasing the GIL) and the
main thread for the event loop (pure Python work, 20 x 10 ms). Printed: the "engine" thread's
rate while the loop is busy, as a share of its rate alone, per switch interval; and how long the
loop's 200 ms of work took. By default each thread gets its own core (as on a many-core GPU
host); ``--same-core`` puts both on one.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import torch


def busy(ms: float) -> None:
    started = time.perf_counter()
    while (time.perf_counter() - started) * 1000 < ms:
        sum(range(200))


def measure(interval: float, size: int, cores: tuple[int, int] | None) -> tuple[float, float]:
    sys.setswitchinterval(interval)
    x = torch.zeros(size)
    stop, count = threading.Event(), [0]

    def engine() -> None:
        if cores:
            os.sched_setaffinity(0, {cores[0]})
        while not stop.is_set():
            for _ in range(50):
                x.add_(1)
            count[0] += 50

    thread = threading.Thread(target=engine)
    thread.start()
    time.sleep(0.3)
    c0, t0 = count[0], time.perf_counter()
    time.sleep(0.5)
    alone = (count[0] - c0) / (time.perf_counter() - t0)
    c0, t0 = count[0], time.perf_counter()
    for _ in range(20):
        busy(10)
    wall = time.perf_counter() - t0
    during = (count[0] - c0) / wall
    stop.set()
    thread.join()
    return during / alone, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", default="0.005,0.002,0.001,0.0005,0.0002")
    parser.add_argument("--op-size", type=int, default=64, help="elements of the tensor each op adds to")
    parser.add_argument("--same-core", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = None if args.same_core or len(cpus) < 2 else (cpus[0], cpus[1])
    if cores:
        os.sched_setaffinity(0, {cores[1]})
    elif args.same_core and cpus:
        os.sched_setaffinity(0, {cpus[0]})
    print(
        f"| switch interval ms | engine rate while the loop works, share of alone ({args.repeat} runs) | loop's 200 ms of work took (ms) |"
    )
    print("|---|---|---|")
    for interval in (float(v) for v in args.intervals.split(",")):
        runs = [measure(interval, args.op_size, cores) for _ in range(args.repeat)]
        shares = ", ".join(f"{100 * share:.0f}%" for share, _ in runs)
        walls = ", ".join(f"{1000 * wall:.0f}" for _, wall in runs)
        print(f"| {1000 * interval:g} | {shares} | {walls} |")


if __name__ == "__main__":
    main()
