"""Serving from the first seconds: describe while the model loads, requests answered while the
fast paths are prepared (engine/warmup.py), and the compiled step taking over mid-generation
without losing or changing a token (fixture models, CPU)."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from safetensors.torch import load_file
from test_reliability_support import WyomingSocket, check_plain, exchange, frame
from test_server_e2e import start_server

from wyoming_lina.engine import Engine, EngineSettings, GenerationJob, SamplingOptions, StreamingDecoder
from wyoming_lina.engine.graphed_step import GraphConfig
from wyoming_lina.engine.warmup import WARM_UP_SWITCH_INTERVAL, WarmUp, switch_interval_at_most

pytestmark = pytest.mark.usefixtures("one_thread")
GREEDY = SamplingOptions(top_k=1)


@pytest.fixture(scope="module")
def text_ids(lina_dir):
    return load_file(str(lina_dir / "vectors.safetensors"))["text_ids"][0].tolist()


async def drive(engine, handles, max_iters=3000, between=None):
    async def drain(handle):
        return sum([len(c) async for c in handle])

    tasks = [asyncio.ensure_future(drain(h)) for h in handles]
    for i in range(max_iters):
        if all(h.done for h in handles):
            break
        if between is not None:
            between(i)
        engine.run_once()
        await asyncio.sleep(0)
    return [await t for t in tasks]


async def tokens_alone(model, codec, jobs):
    engine = Engine(model, StreamingDecoder(codec))
    out = []
    for job in jobs:
        handle = engine.submit(job)
        await drive(engine, [handle])
        out.append(handle.stats.tokens)
    return out


async def test_the_twin_takes_over_mid_generation_without_losing_a_token(model, codec, text_ids):
    jobs = [
        GenerationJob(text_ids, max_frames=30, sampling=GREEDY),
        GenerationJob(text_ids[:12] + [2], max_frames=24, sampling=GREEDY),
    ]
    expected = await tokens_alone(model, codec, jobs)
    graphs = GraphConfig(batch_buckets=(2, 4), text_buckets=(32, 64), capture=False)
    engine = Engine(
        model, StreamingDecoder(codec), EngineSettings(graphs=graphs, max_batch=4, decode_interval=5, pipeline_depth=3)
    )
    runner = engine.runner
    handles = [engine.submit(job) for job in jobs]

    def switch(i):
        if i == 9:  # rows half-way, steps queued: a twin with its own buffers takes over
            runner.precompile(runner.graph_keys(), compile=False)
            old = runner.graphed
            runner.use_compiled()
            assert runner.graphed is not old

    audio = await drive(engine, handles, between=switch)
    assert [h.stats.tokens for h in handles] == expected
    assert audio == [h.stats.frames * 320 for h in handles]


async def test_requests_are_served_while_the_step_compiles_then_the_compiled_step_serves(model, codec, text_ids):
    """The warm-up thread compiles the step (torch.compile, CPU) while the engine thread serves
    rows; the compiled step then takes over; every row's tokens are what it gets alone."""
    graphs = GraphConfig(batch_buckets=(2, 4), text_buckets=(32, 64), capture=False, compile=True)
    engine = Engine(
        model, StreamingDecoder(codec), EngineSettings(graphs=graphs, max_batch=4, decode_interval=5, pipeline_depth=3)
    )
    engine.start()
    default_interval = sys.getswitchinterval()
    try:
        warm = WarmUp(engine).start()
        during, after, intervals = [], [], []
        deadline = time.monotonic() + 240
        while not warm.done.is_set() and time.monotonic() < deadline:  # served all along
            job = GenerationJob(text_ids, max_frames=20, sampling=SamplingOptions(top_k=1))
            handle = engine.submit(job)
            samples = sum([len(c) async for c in handle])
            during.append((job, handle.stats.tokens, samples, handle.stats.frames))
            intervals.append(sys.getswitchinterval())
        assert warm.done.is_set() and warm.error is None, warm.error
        # while it compiled, the engine thread got the GIL back sooner; the default after
        assert min(intervals) <= WARM_UP_SWITCH_INTERVAL < default_interval
        assert sys.getswitchinterval() == default_interval
        assert warm.stage == "compiled" and engine.runner.compiled
        for _ in range(2):
            job = GenerationJob(text_ids[:12] + [2], max_frames=20, sampling=SamplingOptions(top_k=1))
            handle = engine.submit(job)
            samples = sum([len(c) async for c in handle])
            after.append((job, handle.stats.tokens, samples, handle.stats.frames))
    finally:
        engine.stop()
    assert during, "no request was served while the step compiled"
    expected = await tokens_alone(model, codec, [during[0][0], after[0][0]])
    for (_, tokens, samples, frames), want in zip([during[0], after[0]], expected):
        assert tokens == want and samples == frames * 320
    assert all(samples == frames * 320 and frames > 0 for _, _, samples, frames in during + after)


# --- the server ---------------------------------------------------------------------------------
def test_describe_is_answered_while_the_model_loads_and_a_first_request_waits_for_it(tmp_path, lina_dir, codec_dir):
    """A fresh data dir: the built-in voice is made while loading. The port answers describe at
    once; a synthesize sent meanwhile is spoken once the model is there."""
    server = start_server(tmp_path, lina_dir, codec_dir, wait_for="listening at", voice=None)
    try:
        started = time.monotonic()
        events, _ = exchange(server.port, frame("describe"), timeout=5)
        described = time.monotonic() - started
        still_loading = "ready: speaking" not in server.stderr()
        assert [e.type for e in events] == ["info"], events
        assert described < 2.0, described
        with WyomingSocket(server.port, timeout=120) as client:
            client.send(frame("synthesize", {"text": "Hello there."}))
            check_plain(client.read_until("audio-stop"))
        assert "ready: speaking" in server.stderr()
        assert still_loading, "the model was loaded before describe was answered: nothing was shown"
    finally:
        server.stop()


def test_the_switch_interval_is_lowered_inside_the_block_never_raised_and_restored_after_an_error():
    before = sys.getswitchinterval()
    try:
        with pytest.raises(RuntimeError), switch_interval_at_most(0.0005):
            assert sys.getswitchinterval() == pytest.approx(0.0005, abs=2e-6)
            raise RuntimeError("a failed warm-up step")
        assert sys.getswitchinterval() == before
        sys.setswitchinterval(0.0001)  # a lower setting of the user's stays
        with switch_interval_at_most(0.0005):
            assert sys.getswitchinterval() == pytest.approx(0.0001, abs=2e-6)
        assert sys.getswitchinterval() == pytest.approx(0.0001, abs=2e-6)
    finally:
        sys.setswitchinterval(before)
