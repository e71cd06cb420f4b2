"""Where the time of one graphed decode step goes, kernel by kernel (CUDA only).

    python bench/profile_step.py --fixtures ../shared/fixtures --batch 1 --batch 256

Builds the full-size random model as the server runs it (bf16 matrices, fused projections),
compiles and captures the decode step exactly as the engine does (``GraphedStep``), times
graph replays with CUDA events and lists the kernels inside a replay by total time, so an
optimisation can be aimed at what costs most.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_engine import cuda_time, make_batch  # noqa: E402
from full_size import random_full_size_lina  # noqa: E402

from wyoming_lina.engine.graphed_step import GraphConfig, GraphedStep  # noqa: E402
from wyoming_lina.model import cast_weights  # noqa: E402


@torch.inference_mode()
def kernel_table(step, batch, replays: int = 20, top: int = 25) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            step(batch)
        torch.cuda.synchronize()
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for event in prof.events():
        if event.device_type.name != "CUDA":
            continue
        entry = totals[event.name]
        entry[0] += 1
        entry[1] += event.device_time_total if hasattr(event, "device_time_total") else event.cuda_time_total
    launches = sum(n for n, _ in totals.values()) / replays
    busy = sum(t for _, t in totals.values()) / replays
    rows = [
        f"kernels per step: {launches:.0f}; summed kernel time per step: {busy:.1f} us",
        "",
        "| kernel | per step | us per step | share |",
        "|---|---|---|---|",
    ]
    for name, (n, t) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]:
        rows.append(f"| {name[:90]} | {n / replays:.0f} | {t / replays:.1f} | {100 * t / replays / busy:.1f}% |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", default=str(HERE.parent.parent / "shared/fixtures"))
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (repeatable); default 1 and 256")
    parser.add_argument("--text", type=int, default=80, help="text tokens per row")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-gemv", action="store_true", help="cuBLAS for every product (no Triton GEMV at <= 8 rows)")
    parser.add_argument("--batch-buckets", help="comma-separated graph batch buckets (default: the engine's)")
    parser.add_argument(
        "--no-fused-step", action="store_true", help="plain GLA ops in the step instead of the one-kernel Triton step"
    )
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    model = random_full_size_lina("cpu", manifest=Path(args.fixtures) / "lina-tiny/full-size-keys.json").cuda()
    cast_weights(model, torch.bfloat16).fuse_projections(
        small_batch_gemv=False if args.no_gemv else None, fused_step=False if args.no_fused_step else None
    )
    config = GraphConfig(compile=not args.no_compile)
    if args.batch_buckets:
        config = dataclasses.replace(config, batch_buckets=tuple(int(b) for b in args.batch_buckets.split(",")))
    step = GraphedStep(model, config)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    for B in args.batch or [1, 256]:
        batch = make_batch(model, B, args.text)
        t0 = time.monotonic()
        step(batch)
        print(f"## batch {B}: compile + capture {time.monotonic() - t0:.1f} s", flush=True)
        print(f"step (graph replay, median of 200): {cuda_time(lambda: step(batch), 200):.3f} ms\n")
        print("\n".join(kernel_table(step, batch)), end="\n\n", flush=True)


if __name__ == "__main__":
    main()
