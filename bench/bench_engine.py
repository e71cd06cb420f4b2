"""Engine benchmark on a GPU: full-size Lina + full-size WavTokenizer, random weights.

    python bench/bench_engine.py --fixtures ../shared/fixtures [--quick]

Prints markdown tables (see docs/benchmarks.md): decode-step latency of the plain eager step
(the naive baseline) and of the CUDA-graph step at batch 1..256; prefill of a 5 s prompt;
time to first audio through the engine (prompt voice, state voice; concurrency 1/8/32);
single-stream and aggregate real-time factor with codec decoding; peak GPU memory.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from codec_models import move, random_codec  # noqa: E402
from full_size import random_full_size_lina  # noqa: E402

from wyoming_lina.engine import (  # noqa: E402
    Engine,
    GenerationJob,
    SamplingOptions,
    StreamingDecoder,
    streaming_config_for,
)
from wyoming_lina.engine.batch import ActiveBatch  # noqa: E402
from wyoming_lina.engine.graphed_step import GraphConfig, GraphedStep  # noqa: E402
from wyoming_lina.engine.sampling import sample_tokens  # noqa: E402
from wyoming_lina.engine.settings import EngineSettings  # noqa: E402
from wyoming_lina.model import BOS, InitialState, cast_weights  # noqa: E402
from wyoming_lina.text import LinaTokenizer  # noqa: E402

SENTENCE = "The kitchen lights are now off and the front door is locked for the night."  # 12+ words


def cuda_time(fn, iters: int, stream: torch.cuda.Stream | None = None) -> float:
    """Median milliseconds of fn() over iters runs (CUDA events), on ``stream`` if given."""
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(stream or torch.cuda.current_stream()):
            start.record()
            fn()
            end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def graph_time(fn, reps: int = 10, iters: int = 30) -> float:
    """Median microseconds of one fn() replayed from a CUDA graph of reps calls (launch gaps
    inside the graph count, as they do in the served step)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000 / reps)
    return statistics.median(times)


def make_batch(model, B: int, text_len: int) -> ActiveBatch:
    dev = model.device
    text = torch.randint(3, 200, (B, text_len), device=dev)
    row = SimpleNamespace(job=SimpleNamespace(sampling=SamplingOptions(top_k=100)))
    return ActiveBatch(
        rows=[row] * B,
        ctx=model.encode_text(text),
        state=model.init_state(B),
        next_tokens=torch.full((B,), BOS, device=dev),
        counters=torch.zeros(B, dtype=torch.long, device=dev),
        top_k=torch.full((B,), 100, device=dev),
        top_p=torch.ones(B, device=dev),
        temperature=torch.ones(B, device=dev),
        seeds=torch.arange(B, device=dev),
        min_frames=torch.full((B,), 20, device=dev),  # the EOS floor, as served
    )


@torch.inference_mode()
def step_latency(model, sizes, iters) -> list[str]:
    rows = [
        "| batch | eager step (ms) | CUDA-graph step (ms) | compiled + CUDA-graph step (ms) | speed-up vs eager |",
        "|---|---|---|---|---|",
    ]
    served = EngineSettings.for_device("cuda").graphs  # what the server runs (compiled; the model's fused GLA step)
    graphed = GraphedStep(model, GraphConfig())
    compiled = GraphedStep(model, served)
    for B in sizes:
        batch = make_batch(model, B, 80)

        def eager():
            logits, batch.state = model.step(batch.ctx, batch.next_tokens, batch.state)
            batch.next_tokens = sample_tokens(
                logits, batch.top_k, batch.top_p, batch.temperature, batch.seeds, batch.counters, 100, batch.min_frames
            )

        for _ in range(3):
            eager()
        t_eager = cuda_time(eager, iters)
        batch = make_batch(model, B, 80)
        graphed(batch)  # bind + capture
        t_graph = cuda_time(lambda: graphed(batch), iters * 4)
        batch = make_batch(model, B, 80)
        t0 = time.monotonic()
        compiled(batch)  # bind + compile + capture
        print(f"compile + capture at batch {B}: {time.monotonic() - t0:.1f} s", file=sys.stderr)
        t_comp = cuda_time(lambda: compiled(batch), iters * 4)
        rows.append(f"| {B} | {t_eager:.2f} | {t_graph:.3f} | {t_comp:.3f} | {t_eager / min(t_graph, t_comp):.1f}x |")
    return rows


@torch.inference_mode()
def profile_step(model, B: int = 1) -> list[str]:
    """Kernel launches in one eager step and the CUDA ops that take the most time."""
    from torch.profiler import ProfilerActivity, profile

    batch = make_batch(model, B, 80)
    for _ in range(3):
        logits, batch.state = model.step(batch.ctx, batch.next_tokens, batch.state)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        logits, batch.state = model.step(batch.ctx, batch.next_tokens, batch.state)
        sample_tokens(
            logits, batch.top_k, batch.top_p, batch.temperature, batch.seeds, batch.counters, 100, batch.min_frames
        )
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12)
    return [f"kernels per eager step at batch {B}: {len(kernels)}", table]


@torch.inference_mode()
def prefill_time(model, prompt_frames: int) -> str:
    text = torch.randint(3, 200, (1, 120), device=model.device)
    audio = torch.randint(3, 4099, (1, prompt_frames), device=model.device)
    audio[:, 0] = BOS

    def run():
        ctx = model.encode_text(text)
        model.forward_audio(ctx, audio, model.init_state(1))

    for _ in range(3):
        run()
    return f"| prefill of a {prompt_frames / 75:.0f} s prompt ({prompt_frames} frames) incl. text encoder | {cuda_time(run, 10):.1f} ms |"


def build_engine(model, codec, graphs: bool) -> Engine:
    """graphs=True: the engine exactly as the server builds it on CUDA; False: the naive baseline
    (plain eager step, decode every step, constant-hop streaming windows)."""
    if graphs:
        engine = Engine(model, StreamingDecoder(codec, streaming_config_for("cuda")), EngineSettings.for_device("cuda"))
    else:
        engine = Engine(model, StreamingDecoder(codec), EngineSettings(graphs=None, decode_interval=1))
    engine.start()
    return engine


async def run_jobs(engine, jobs):
    """Submit all jobs at once; return (first-audio latencies, total audio s, wall s)."""
    t0 = time.monotonic()
    handles = [engine.submit(job) for job in jobs]

    async def drain(h):
        n = 0
        async for chunk in h:
            n += len(chunk)
        return n

    samples = await asyncio.gather(*(drain(h) for h in handles))
    wall = time.monotonic() - t0
    ttfa = [h.stats.first_audio - h.stats.submitted for h in handles if h.stats.first_audio]
    return ttfa, sum(samples) / 24000, wall


@contextmanager
def host_diagnosis(engine):
    """Count what can stall the engine thread during a run: garbage collections (per
    generation, with their time; they hold the GIL) and eager codec decodes (windows that no
    captured graph fits: a stream's last window when it is shorter than the steady window)."""
    stats = {"gc_n": [0, 0, 0], "gc_ms": [0.0, 0.0, 0.0], "eager_decodes": 0}
    started = {}

    def on_gc(phase, info):
        if phase == "start":
            started["t"] = time.perf_counter()
        elif "t" in started:
            g = info["generation"]
            stats["gc_n"][g] += 1
            stats["gc_ms"][g] += 1000 * (time.perf_counter() - started.pop("t"))

    codec = engine.decoder.codec
    decode = codec.decode

    def counted(*args, **kwargs):
        stats["eager_decodes"] += 1
        return decode(*args, **kwargs)

    gc.callbacks.append(on_gc)
    codec.decode = counted
    try:
        yield stats
    finally:
        gc.callbacks.remove(on_gc)
        del codec.decode


def describe_host(stats) -> str:
    gcs = ", ".join(f"gen{g} {n} ({ms:.0f} ms)" for g, (n, ms) in enumerate(zip(stats["gc_n"], stats["gc_ms"])))
    return f"garbage collections {gcs}; eager codec decodes {stats['eager_decodes']}"


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] * 1000


async def engine_tables(model, codec, tokenizer, quick: bool, graphs: bool, timeline: bool = False) -> list[str]:
    engine = build_engine(model, codec, graphs)
    timeline_rows: list[str] = []
    host_rows: list[str] = []
    dev = model.device
    prompt = torch.randint(0, 4096, (375,))
    prompt_text = "this is a five second voice prompt that was recorded in a quiet room at home"
    cfg = model.config.gla
    state = InitialState(
        [0.02 * torch.randn(1, cfg.heads, cfg.head_k, cfg.head_v, device=dev) for _ in range(2 * model.config.n_layer)]
    )
    text_ids = tokenizer.encode(SENTENCE.lower())
    prompt_ids = tokenizer.encode(prompt_text + " " + SENTENCE.lower())
    sampling = SamplingOptions(top_k=100)

    def job(voice: str, frames: int, seed: int) -> GenerationJob:
        s = SamplingOptions(top_k=100, seed=seed)
        if voice == "prompt":
            return GenerationJob(prompt_ids, max_frames=frames, sampling=s, prompt_codes=prompt)
        return GenerationJob(text_ids, max_frames=frames, sampling=s, initial_state=state)

    # warm-up as the server does it (binds buffers, captures the graphs, tunes the prefill)
    await run_jobs(engine, [job("prompt", 60, 0), job("state", 60, 1)])
    engine.warm_graphs((len(text_ids), len(prompt_ids)), sampling.top_k)
    engine.warm_prefill()
    engine.warm_codec()
    await run_jobs(engine, [job("state", 60, i) for i in range(8)])
    gc.freeze()  # as `serve` does after its warm-up: long-lived objects out of every GC pass

    label = "CUDA graphs" if graphs else "eager baseline"
    rows = [f"| engine ({label}) | voice | concurrency | TTFA p50 (ms) | TTFA p95 (ms) |", "|---|---|---|---|---|"]
    rounds = 2 if quick else 5
    for voice in ("prompt", "state"):
        for conc in (1, 8, 32):
            lat = []
            for r in range(rounds):
                ttfa, _, _ = await run_jobs(engine, [job(voice, 60, 100 * r + i) for i in range(conc)])
                lat += ttfa
            rows.append(f"| {label} | {voice} | {conc} | {pct(lat, 0.5):.0f} | {pct(lat, 0.95):.0f} |")
    if graphs:
        rows += [""] + await server_table(engine, tokenizer, prompt, prompt_text, state, rounds)

    # each load twice: the first time at a load also pays whatever is first-time at that size
    rows += [
        "",
        f"| engine ({label}) | streams | audio s | wall s | real-time factor | x real time | x real time, first run at this load | peak GPU GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    frames = 300 if quick else 600
    for streams in (1, 8, 64) if quick else (1, 8, 64, 256):
        torch.cuda.reset_peak_memory_stats()
        with host_diagnosis(engine) as first_host:
            _, audio_first, wall_first = await run_jobs(
                engine, [job("state", frames, 1000 + i) for i in range(streams)]
            )
        second = [job("state", frames, 2000 + i) for i in range(streams)]
        with host_diagnosis(engine) as second_host:
            if timeline and streams == 256:
                from gpu_timeline import recording

                with recording() as recorded:
                    _, audio_s, wall = await run_jobs(engine, second)
                timeline_rows = ["", f"GPU timeline of the second run at {streams} streams:", ""] + recorded.summary()
            else:
                _, audio_s, wall = await run_jobs(engine, second)
        host_rows.append(
            f"- {streams} streams: first run {describe_host(first_host)}; second run {describe_host(second_host)}"
        )
        peak = torch.cuda.max_memory_allocated() / 2**30
        rows.append(
            f"| {label} | {streams} | {audio_s:.1f} | {wall:.2f} | {wall / audio_s:.4f} | {audio_s / wall:.0f} | {audio_first / wall_first:.0f} | {peak:.2f} |"
        )
    engine.stop()
    return rows + ["", "Engine-thread stalls per load:"] + host_rows + timeline_rows


async def server_table(engine, tokenizer, prompt, prompt_text, state, rounds: int) -> list[str]:
    """TTFA through the real Wyoming handler on loopback TCP: the server runs in its own thread
    and event loop (as in ``serve``), the client is wyoming's ``AsyncTcpClient``; the clock runs
    from writing ``synthesize`` to reading the first ``audio-chunk``."""
    import socket
    import threading
    from functools import partial

    from wyoming.client import AsyncTcpClient
    from wyoming.server import AsyncServer
    from wyoming.tts import Synthesize, SynthesizeVoice

    from wyoming_lina.engine.synthesizer import SynthesisSettings, Synthesizer
    from wyoming_lina.server.handler import HandlerSettings, LinaEventHandler
    from wyoming_lina.server.info import InfoBuilder
    from wyoming_lina.server.service import Service
    from wyoming_lina.server.tracking import ConnectionCounter, RequestTracker
    from wyoming_lina.voices.voice import Voice

    voices = {
        "prompt": Voice("prompt", prompt_codes=prompt, prompt_text=prompt_text),
        "state": Voice("state", initial_state=state),
    }

    class Voices:
        def get(self, name):
            return voices[name]

        def list(self):
            return [v.info for v in voices.values()]

    settings = SynthesisSettings(default_voice="state", max_frames=60, sampling=SamplingOptions(top_k=100, seed=1))
    synthesizer = Synthesizer(engine, tokenizer, Voices(), settings)
    factory = partial(
        LinaEventHandler,
        info=InfoBuilder(Voices().list),
        service=Service.ready_with(synthesizer),
        settings=HandlerSettings(),
        tracker=RequestTracker(),
        connections=ConnectionCounter(),
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server_loop = asyncio.new_event_loop()
    server = AsyncServer.from_uri(f"tcp://127.0.0.1:{port}")
    threading.Thread(target=server_loop.run_forever, name="wyoming-server", daemon=True).start()
    asyncio.run_coroutine_threadsafe(server.start(factory), server_loop).result(30)

    async def one(voice: str) -> float:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            t0 = time.monotonic()
            await client.write_event(Synthesize(text=SENTENCE, voice=SynthesizeVoice(name=voice)).event())
            first = None
            while True:
                event = await client.read_event()
                if event is None or event.type == "error":
                    raise RuntimeError(f"server answered {event}")
                if event.type == "audio-chunk" and first is None:
                    first = time.monotonic() - t0
                if event.type == "audio-stop":
                    return first

    rows = [
        "| Wyoming server, loopback | voice | concurrency | TTFA p50 (ms) | TTFA p95 (ms) |",
        "|---|---|---|---|---|",
    ]
    try:
        await one("state")
        for voice in ("prompt", "state"):
            for conc in (1, 8, 32):
                lat = []
                for _ in range(rounds):
                    lat += await asyncio.gather(*(one(voice) for _ in range(conc)))
                rows.append(f"| server | {voice} | {conc} | {pct(lat, 0.5):.0f} | {pct(lat, 0.95):.0f} |")
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), server_loop).result(30)
        server_loop.call_soon_threadsafe(server_loop.stop)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", default=str(HERE.parent.parent / "shared/fixtures"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--profile", action="store_true", help="only profile one eager step")
    parser.add_argument("--engine-only", action="store_true", help="skip the step-latency and prefill tables")
    parser.add_argument(
        "--timeline", action="store_true", help="record the GPU's kernels during the second 256-stream run"
    )
    parser.add_argument("--no-fuse", action="store_true", help="keep q/k/v/g as four GEMMs (as before fusing)")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    dtype = getattr(torch, args.dtype)
    fixtures = Path(args.fixtures)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, weights {args.dtype}\n")
    model = random_full_size_lina("cpu", manifest=fixtures / "lina-tiny/full-size-keys.json").cuda()
    if dtype != torch.float32:
        cast_weights(model, dtype)
    if not args.no_fuse:
        model.fuse_projections()  # what Engine.create does on CUDA
    codec = move(random_codec(), "cuda", dtype).eval()
    tokenizer = LinaTokenizer(fixtures / "lina-tiny/bpe256.json")
    if args.profile:
        print("\n".join(profile_step(model, 1)))
        return
    sizes = (1, 8, 64) if args.quick else (1, 8, 64, 256)
    if not args.engine_only:
        print("\n".join(step_latency(model, sizes, 20 if args.quick else 50)))
        print()
        print("| what | time |\n|---|---|\n" + prefill_time(model, 375))
        print()
    print(
        "\n".join(asyncio.run(engine_tables(model, codec, tokenizer, args.quick, graphs=True, timeline=args.timeline)))
    )
    if not args.skip_baseline:
        print()
        print("\n".join(asyncio.run(engine_tables(model, codec, tokenizer, True, graphs=False))))


if __name__ == "__main__":
    main()
