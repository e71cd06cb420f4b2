"""What building the quantized CPU step costs at start-up, first start against a restart.

    python bench/cpu_step_build.py --threads 2 [--runs 3]

Each run is a fresh process (as a server start is): the full-size random model, then
``OnnxStep(model, cache_dir=...)`` timed, with the process's peak memory (ru_maxrss) before and
after. The first run builds the step (export, quantize) and keeps it in the cache dir; the next
ones load it from there (docs/cpu.md).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one_start(cache: str, threads: int, fixtures: str) -> None:
    import torch

    sys.path[:0] = [str(HERE), str(HERE.parent)]
    from full_size import random_full_size_lina

    from wyoming_lina.model.cpu_step import OnnxStep

    torch.set_num_threads(threads)
    model = random_full_size_lina(manifest=Path(fixtures) / "lina-tiny/full-size-keys.json")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    step = OnnxStep(model, cache_dir=cache)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    how = "loaded from the cache" if step.from_cache else "built"
    print(f"{how}: {seconds:.1f} s, peak memory {before:.0f} -> {after:.0f} MB (+{after - before:.0f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fixtures", default=str(HERE.parent.parent / "shared/fixtures"))
    parser.add_argument("--one", metavar="CACHE", help=argparse.SUPPRESS)  # a single start (the child)
    args = parser.parse_args()
    if args.one:
        one_start(args.one, args.threads, args.fixtures)
        return
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(args.runs):
            command = [sys.executable, __file__, "--one", cache, "--threads", str(args.threads)]
            subprocess.run([*command, "--fixtures", args.fixtures], check=True)


if __name__ == "__main__":
    main()
