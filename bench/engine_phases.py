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
import dataclasses
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
    timed(engine.runner, "launch", "step: launch (+ take the oldest queued step's tokens)")
    timed(torch.cuda.Event, "synchronize", "  cuda event waits")
    timed(engine, "_process", "process tokens")
    timed(engine.outputs, "flush_log", "  tokens to rows")
    timed(engine.decoder, "windows", "  codec windows")
    timed(engine.decoder, "launch", "  codec launch")
    timed(engine.outputs, "hand_out", "hand out audio")
    from wyoming_lina.engine.decoding import LaunchedDecode

    timed(LaunchedDecode, "results", "  take + crossfade")
    timed(engine, "_admit", "admit (text encoding, prefill)")
    timed(engine.runner.prefill, "prepare", "  prepare (text, prefill, states)")
    timed(engine.model, "encode_text", "    encode_text")
    from wyoming_lina.engine.batch import ActiveBatch
    from wyoming_lina.engine.graphed_step import GraphedStep
    from wyoming_lina.model import LinaState

    timed(LinaState, "cat", "    LinaState.cat")
    timed(ActiveBatch, "extend", "  ActiveBatch.extend")
    timed(ActiveBatch, "keep", "ActiveBatch.keep")
    timed(GraphedStep, "_bind", "GraphedStep._bind (batch -> graph buffers)")
    timed(engine, "_drop_leaving", "drop cancelled / overdue")


def use_settings(engine, **changes) -> None:
    """Switch an engine's loop settings between rounds (same process, same graphs): a benchmark
    knob only; the server's settings are fixed when its engine is made."""
    settings = dataclasses.replace(engine.settings, **changes)
    engine.settings = engine.scheduler.settings = engine.runner.settings = settings
    engine.scheduler.max_batch = settings.max_batch
    slots = engine.runner._host_tokens
    engine.runner._host_tokens = [torch.zeros_like(slots[0]).pin_memory() for _ in range(settings.pipeline_depth + 1)]


async def main_async(args) -> None:
    fixtures = Path(args.fixtures)
    model = random_full_size_lina("cpu", manifest=fixtures / "lina-tiny/full-size-keys.json").cuda()
    cast_weights(model, torch.bfloat16).fuse_projections()
    codec = move(random_codec(), "cuda", torch.bfloat16).eval()
    engine = build_engine(model, codec, graphs=True)
    cfg = model.config.gla
    state = InitialState(
        [
            0.02 * torch.randn(1, cfg.heads, cfg.head_k, cfg.head_v, device="cuda")
            for _ in range(2 * model.config.n_layer)
        ]
    )
    text_ids = [1] + [5 + i % 200 for i in range(70)] + [2]
    if args.sentence:  # bench_engine's text: with random weights some rows then end early at EOS
        from bench_engine import SENTENCE

        from wyoming_lina.text import LinaTokenizer

        text_ids = LinaTokenizer(fixtures / "lina-tiny/bpe256.json").encode(SENTENCE.lower())

    def job(frames: int, seed: int) -> GenerationJob:
        return GenerationJob(
            text_ids, max_frames=frames, sampling=SamplingOptions(top_k=100, seed=seed), initial_state=state
        )

    await run_jobs(engine, [job(60, i) for i in range(2)])
    engine.warm_graphs((len(text_ids),), 100)
    print(f"codec graphs: {engine.warm_codec()}")
    if not args.cold:
        await run_jobs(engine, [job(args.frames, 10 + i) for i in range(args.streams)])  # every window shape once
    gc.freeze()
    instrument(engine)
    profiler = None
    settings = [
        (d, a, r)
        for d in args.depth or [engine.settings.pipeline_depth]
        for a in args.admit or [engine.settings.max_admit_per_step]
        for r in args.rows_per_step or [engine.settings.rows_per_queued_step]
    ]
    for round_, (depth, admit, per_step) in enumerate(s for s in settings for _ in range(args.rounds)):
        current = engine.settings
        if (depth, admit, per_step) != (
            current.pipeline_depth,
            current.max_admit_per_step,
            current.rows_per_queued_step,
        ):
            use_settings(engine, pipeline_depth=depth, max_admit_per_step=admit, rows_per_queued_step=per_step)
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
        slow: list = []
        if args.slow and last:
            traced_once = engine.run_once

            def traced():
                before = {k: v[1] for k, v in TIMES.items()}
                t = time.perf_counter()
                try:
                    traced_once()
                finally:
                    d = time.perf_counter() - t
                    if d > args.slow / 1000:
                        spent = sorted(
                            ((v[1] - before.get(k, 0.0), k.strip()) for k, v in TIMES.items()), reverse=True
                        )[:4]
                        slow.append((t - round_t0, d, engine.steps, spent))

            engine.run_once = traced
        round_t0 = time.perf_counter()
        steps0 = engine.steps
        jobs = [job(args.frames, 1000 + i) for i in range(args.streams)]
        if args.timeline and last:
            from gpu_timeline import recording

            with recording(host=args.timeline_host) as timeline:
                _, audio_s, wall = await run_jobs(engine, jobs)
        else:
            _, audio_s, wall = await run_jobs(engine, jobs)
        steps = engine.steps - steps0
        if slow:
            engine.run_once = traced_once
            print(
                f"\n{len(slow)} engine iterations over {args.slow} ms (s from submit, ms, steps launched, where the time went):"
            )
            for at, d, n, spent in slow[:40]:
                print(
                    f"  {at:.3f} s  {1000 * d:.1f} ms  step {n - steps0}: "
                    + ", ".join(f"{k} {1000 * v:.1f}" for v, k in spent if v > 0.0005)
                )
        print(f"\n{args.streams} streams x {args.frames} frames, pipeline depth {depth} ({engine.settings.queued_steps(args.streams)} queued), admit {admit}: {audio_s:.1f} s "
              f"of audio in {wall:.3f} s = {audio_s / wall:.0f}x real time; {steps} steps, {1000 * wall / steps:.3f} ms per step")  # fmt: skip
        if args.brief:
            continue
        print("| phase | calls | total s | ms per call |\n|---|---|---|---|")
        for label, (n, t) in TIMES.items():
            print(f"| {label} | {n} | {t:.3f} | {1000 * t / max(n, 1):.3f} |")
    if args.sync_check:
        await sync_check(engine, job, text_ids)
    engine.stop()
    if args.timeline:
        print("\n## GPU timeline of the last round (torch.profiler; the profiler adds some host time)\n")
        print("\n".join(timeline.summary()))
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


async def sync_check(engine, job, text_ids) -> None:
    """Run a load with rows joining (state and prompt voices) and leaving mid-run under
    torch.cuda.set_sync_debug_mode("warn"): every implicit host-GPU synchronisation inside the
    engine (a pageable copy, an .item()) drains the queued steps, so there should be none."""
    import warnings

    prompt = torch.randint(0, 4096, (375,))
    engine.warm_prefill()  # as the server does at start-up (FLA autotunes per batch size)
    warm = GenerationJob(text_ids, max_frames=4, sampling=SamplingOptions(top_k=100, seed=1), prompt_codes=prompt)
    await run_jobs(engine, [warm])  # the voice's encoder pass is cached, as for any known voice
    first = [engine.submit(job(120 + 8 * (i % 8), 5000 + i)) for i in range(64)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            await asyncio.sleep(0.05)  # the first rows are generating: later ones join mid-run
            late = [engine.submit(job(60, 6000 + i)) for i in range(8)]
            late += [
                engine.submit(
                    GenerationJob(
                        text_ids, max_frames=60, sampling=SamplingOptions(top_k=100, seed=7000 + i), prompt_codes=prompt
                    )
                )
                for i in range(8)
            ]
            for h in first + late:
                async for _ in h:
                    pass
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    print(
        f"\nsync check (64 rows, 16 joining mid-run, rows leaving at 8 different steps): {len(syncs)} implicit synchronisations"
    )
    for w in syncs[:10]:
        print(f"  {w.filename}:{w.lineno}: {str(w.message)[:160]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", default=str(HERE.parent.parent / "shared/fixtures"))
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no full warm-up round: the first round pays what is first-time at this load",
    )
    parser.add_argument("--depth", type=int, action="append", help="pipeline depths to compare (default: the engine's)")
    parser.add_argument(
        "--admit", type=int, action="append", help="admissions per iteration to compare (default: the engine's)"
    )
    parser.add_argument(
        "--rows-per-step", type=int, action="append", help="EngineSettings.rows_per_queued_step values to compare"
    )
    parser.add_argument("--brief", action="store_true", help="only the wall/throughput line per round")
    parser.add_argument(
        "--cprofile", action="store_true", help="also profile the engine thread's Python (cProfile, last round)"
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="also record the GPU's kernels in the last round: busy/idle time per stream",
    )
    parser.add_argument(
        "--sentence", action="store_true", help="bench_engine's 12-word sentence as the text (rows may end at EOS)"
    )
    parser.add_argument(
        "--sync-check",
        action="store_true",
        help="count implicit host-GPU syncs in the engine thread (rows joining and leaving mid-run)",
    )
    parser.add_argument(
        "--slow", type=float, default=0, help="list the last round's engine iterations longer than this many ms"
    )
    parser.add_argument(
        "--timeline-host", action="store_true", help="with --timeline: also the host's CUDA runtime calls"
    )
    parser.add_argument(
        "--codec-profile", action="store_true", help="also list the kernels of one batched codec decode"
    )
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
