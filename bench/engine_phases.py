"""Where the wall time of many concurrent streams goes inside the engine thread (CUDA only).

    python bench/engine_phases.py --fixtures ../shared/fixtures --streams 256 --frames 600

Runs the engine as the server builds it (full-size random models, bf16) with all streams
submitted at once and times, on the engine thread: launching the graphed step, waiting for the
GPU, the per-step host work on tokens, and the streaming-codec work (launch, wait, hand-out).
Aimed at the aggregate-throughput target: what is left of the wall beyond the LM steps.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import gc
import inspect
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_engine import build_engine, run_jobs  # noqa: E402
from codec_models import move, random_codec  # noqa: E402
from full_size import random_full_size_lina  # noqa: E402

from wyoming_lina.engine import GenerationJob, SamplingOptions  # noqa: E402
from wyoming_lina.model import InitialState, cast_weights  # noqa: E402

TIMES: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])


def timed(owner, name: str, label: str | None = None) -> None:
    """Wrap owner.name (a method on the instance or class) with a wall-clock accumulator."""
    fn = getattr(owner, name, None)
    if fn is None:
        return
    static = isinstance(inspect.getattr_static(owner, name), staticmethod)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            entry = TIMES[label or name]
            entry[0] += 1
            entry[1] += time.perf_counter() - t0

    setattr(owner, name, staticmethod(wrapper) if static else wrapper)


def instrument(engine) -> None:
    timed(engine, "_step", "step: launch + previous step's processing")
    timed(engine, "_finish_inflight", "  finish previous step (wait + process)")
    timed(torch.cuda.Event, "synchronize", "    cuda event waits")
    timed(engine, "_process", "    process tokens")
    timed(engine, "_flush_log", "      tokens to rows")
    timed(engine.decoder, "windows", "      codec windows")
    timed(engine.decoder, "launch", "      codec launch")
    timed(engine, "_hand_out_audio", "hand out audio")
    from wyoming_lina.engine.decoding import LaunchedDecode

    timed(LaunchedDecode, "results", "  take + crossfade")
    timed(engine, "_admit", "admit (text encoding, prefill)")
    timed(engine, "_prepare", "  prepare (text, prefill, states)")
    timed(engine.model, "encode_text", "    encode_text")
    from wyoming_lina.engine.batch import ActiveBatch
    from wyoming_lina.engine.graphed_step import GraphedStep
    from wyoming_lina.model import LinaState

    timed(LinaState, "cat", "    LinaState.cat")
    timed(ActiveBatch, "extend", "  ActiveBatch.extend")
    timed(ActiveBatch, "keep", "ActiveBatch.keep")
    timed(GraphedStep, "_bind", "GraphedStep._bind (batch -> graph buffers)")
    timed(engine, "_drop_finished_or_cancelled", "drop finished")


async def main_async(args) -> None:
    fixtures = Path(args.fixtures)
    model = random_full_size_lina("cpu", manifest=fixtures / "lina-tiny/full-size-keys.json").cuda()
    cast_weights(model, torch.bfloat16).fuse_projections()
    codec = move(random_codec(), "cuda", torch.bfloat16).eval()
    engine = build_engine(model, codec, graphs=True)
    cfg = model.config.gla
    state = InitialState([0.02 * torch.randn(1, cfg.heads, cfg.head_k, cfg.head_v, device="cuda") for _ in range(2 * model.config.n_layer)])
    text_ids = [1] + [5 + i % 200 for i in range(70)] + [2]

    def job(frames: int, seed: int) -> GenerationJob:
        return GenerationJob(text_ids, max_frames=frames, sampling=SamplingOptions(top_k=100, seed=seed), initial_state=state)

    await run_jobs(engine, [job(60, i) for i in range(2)])
    engine.warm_graphs((len(text_ids),), 100)
    print(f"codec graphs: {engine.warm_codec()}")
    await run_jobs(engine, [job(args.frames, 10 + i) for i in range(args.streams)])  # every window shape once
    gc.freeze()
    instrument(engine)
    profiler = None
    settings = [(d, a) for d in args.depth or [engine.pipeline_depth] for a in args.admit or [engine.max_admit_per_step]]
    for round_, (depth, admit) in enumerate((d, a) for d, a in settings for _ in range(args.rounds)):
        if (depth, admit) != (engine.pipeline_depth, engine.max_admit_per_step):
            engine.pipeline_depth, engine.max_admit_per_step = depth, admit
            engine._host_tokens = [torch.zeros_like(engine._host_tokens[0]).pin_memory() for _ in range(depth + 1)]
        last = round_ == len(settings) * args.rounds - 1
        if args.cprofile and last:
            import cProfile

            profiler = cProfile.Profile()
            run_once = engine.run_once

            def profiled():
                profiler.enable()
                try:
                    run_once()
                finally:
                    profiler.disable()

            engine.run_once = profiled
        TIMES.clear()
        steps0 = engine.steps
        _, audio_s, wall = await run_jobs(engine, [job(args.frames, 1000 + i) for i in range(args.streams)])
        steps = engine.steps - steps0
        print(f"\n{args.streams} streams x {args.frames} frames, pipeline depth {depth}, admit {admit}: {audio_s:.1f} s "
              f"of audio in {wall:.3f} s = {audio_s / wall:.0f}x real time; {steps} steps, {1000 * wall / steps:.3f} ms per step")  # fmt: skip
        if args.brief:
            continue
        print("| phase | calls | total s | ms per call |\n|---|---|---|---|")
        for label, (n, t) in TIMES.items():
            print(f"| {label} | {n} | {t:.3f} | {1000 * t / max(n, 1):.3f} |")
    engine.stop()
    if profiler is not None:
        import pstats

        print("\n## engine thread, cProfile (last round; timings inflated by the profiler)\n```")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
        print("```")
    if args.codec_profile:
        from profile_step import kernel_table

        codes = torch.randint(0, 4096, (64, 300), device="cuda")
        for _ in range(3):
            codec.decode(codes)
        print("\n## codec.decode, 64 windows of 300 frames\n")
        print("\n".join(kernel_table(lambda _: codec.decode(codes), None, replays=5)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", default=str(HERE.parent.parent / "shared/fixtures"))
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--depth", type=int, action="append", help="pipeline depths to compare (default: the engine's)")
    parser.add_argument("--admit", type=int, action="append", help="admissions per iteration to compare (default: the engine's)")
    parser.add_argument("--brief", action="store_true", help="only the wall/throughput line per round")
    parser.add_argument("--cprofile", action="store_true", help="also profile the engine thread's Python (cProfile, last round)")
    parser.add_argument("--codec-profile", action="store_true", help="also list the kernels of one batched codec decode")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
