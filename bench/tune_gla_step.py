"""Time the one-kernel GLA decode step (model/triton_step.py) per warps-per-program choice.

    python bench/tune_gla_step.py [--batch 1 --batch 256]

Full-size layer shapes (8 heads, dk 64, dv 128, conv 4); the state is read and written once
per call, so the table also gives the effective memory bandwidth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_engine import graph_time  # noqa: E402

from wyoming_lina.model import triton_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, action="append")
    args = parser.parse_args()
    H, DK, DV, KC = 8, 64, 128, 4
    key, val = H * DK, H * DV
    original = triton_step.num_warps
    print("| batch | warps | us per call | state GB/s |\n|---|---|---|---|")
    for B in args.batch or [1, 64, 256]:
        dev = "cuda"
        proj = torch.randn(B, 3 * key + 2 * val, device=dev, dtype=torch.bfloat16)
        conv = [torch.randn(B, c, KC, device=dev) for c in (key, key, val)]
        weights = [torch.randn(c, 1, KC, device=dev) for c in (key, key, val)]
        state = torch.randn(B, H, DK, DV, device=dev) * 0.1
        bias, norm = torch.randn(key, device=dev), torch.ones(DV, device=dev)
        for warps in (1, 2, 4, 8, 16):
            triton_step.num_warps = lambda dk, dv, w=warps: w

            def fn():
                return triton_step.gla_decode_step(
                    proj, *conv, *weights, state, bias, norm, DK**-0.5, 1e-5, torch.bfloat16
                )

            t = graph_time(fn, reps=20)  # launched eagerly the op is bound by Python dispatch
            print(f"| {B} | {warps} | {t:.1f} | {2 * state.numel() * 4 / t / 1e3:.0f} |", flush=True)
    triton_step.num_warps = original


if __name__ == "__main__":
    main()
