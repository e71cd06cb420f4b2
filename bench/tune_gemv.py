"""The small-batch GEMV kernel (model/triton_gemv.py) against cuBLAS on Lina's step shapes.

    python bench/tune_gemv.py [--rows 1 --rows 2 --rows 8] [--sweep]

For each row count: max error against F.linear (float32 reference), then the time of the
whole chain of matrix products in one decode step (13 GLA layers x 4 + cross-attention query +
logits head; ~245 MB of bf16 weights), replayed from a CUDA graph so launch gaps count as they
do when served. --sweep times every tile choice per shape to pick ``tiles``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_engine import graph_time  # noqa: E402

from wyoming_lina.model import triton_gemv  # noqa: E402
from wyoming_lina.model.layers import project  # noqa: E402

# (N, K) of the products in one step of the full-size model, in order
LAYER = [(3584, 1024), (1024, 1024), (2816, 1024), (1024, 1408)]
CHAIN = LAYER * 6 + [(1024, 1024)] + LAYER * 7 + [(4099, 1024)]


@torch.inference_mode()  # as the engine steps: layers.project takes the GEMV only without autograd
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, action="append")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    dev = "cuda"
    torch.manual_seed(0)
    weights = {s: torch.randn(s, device=dev, dtype=torch.bfloat16) / s[1] ** 0.5 for s in set(CHAIN)}
    chain_bytes = sum(n * k * 2 for n, k in CHAIN)
    print(f"chain: {len(CHAIN)} products, {chain_bytes / 1e6:.0f} MB of bf16 weights")
    print(
        "| rows | max rel err vs fp32 (GEMV / cuBLAS) | cuBLAS chain us | GEMV chain us | as served us | served vs cuBLAS |"
    )
    print("|---|---|---|---|---|---|")
    for M in args.rows or [1, 2, 4, 8]:
        xs = {k: torch.randn(M, k, device=dev, dtype=torch.bfloat16) for k in (1024, 1408)}
        err_t = err_c = 0.0
        for (n, k), w in weights.items():
            ref = xs[k].float() @ w.float().T
            scale = ref.abs().max().item()
            err_t = max(err_t, (triton_gemv.gemv(xs[k], w, torch.float32) - ref).abs().max().item() / scale)
            err_c = max(err_c, (F.linear(xs[k], w).float() - ref).abs().max().item() / scale)
        # the chain's products are independent here (same x): the graph keeps their launch order.
        # "served": what layers.project runs (the GEMV where gemv_wins, else cuBLAS)
        cublas = graph_time(lambda: [F.linear(xs[k], weights[(n, k)]) for n, k in CHAIN])
        triton_t = graph_time(lambda: [triton_gemv.gemv(xs[k], weights[(n, k)], torch.bfloat16) for n, k in CHAIN])
        served = graph_time(lambda: [project(xs[k], weights[(n, k)], True) for n, k in CHAIN])
        print(
            f"| {M} | {err_t:.1e} / {err_c:.1e} | {cublas:.1f} | {triton_t:.1f} | {served:.1f} | {cublas / served:.2f}x |",
            flush=True,
        )
        if not args.sweep:
            continue
        print(f"\nrows {M}: per shape, best tiles (BLOCK_N, BLOCK_K, warps, stages) us; cuBLAS us")
        for n, k in sorted(set(CHAIN)):
            w, x = weights[(n, k)], xs[k]
            out = torch.empty(M, n, device=dev, dtype=torch.bfloat16)
            results = []
            for bn, bk, wp, st in itertools.product((4, 8, 16), (128, 256, 512), (2, 4, 8), (1, 3)):
                if bn * triton_gemv.triton.next_power_of_2(M) * bk > 64 * 32 * wp:
                    continue  # more than 64 accumulators per thread: spills
                try:
                    t = graph_time(lambda: triton_gemv.launch(x, w, out, (bn, bk, wp, st)), reps=20, iters=10)
                except Exception as exc:  # noqa: BLE001 (out of resources for this tile)
                    print(f"  skip {(bn, bk, wp, st)}: {type(exc).__name__}")
                    continue
                results.append((t, (bn, bk, wp, st)))
            results.sort()
            chosen = triton_gemv.tiles(M)
            chosen_t = next((t for t, c in results if c == chosen), float("nan"))
            cub = graph_time(lambda: F.linear(x, w), reps=20, iters=10)
            best = ", ".join(f"{c} {t:.2f}" for t, c in results[:3])
            print(f"  {n}x{k}: {best}; chosen {chosen} {chosen_t:.2f}; cuBLAS {cub:.2f}", flush=True)
        print()


if __name__ == "__main__":
    main()
