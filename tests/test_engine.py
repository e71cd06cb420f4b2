"""The generation engine on the tiny fixture models (CPU): batching, prefill, limits, streaming."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wyoming_lina.engine import Engine, EngineSettings, GenerationJob, SamplingOptions, StreamingDecoder
from wyoming_lina.errors import DeadlineExceededError, OverloadedError, SynthesisError
from wyoming_lina.model import BOS, EOS, PAD

GREEDY = SamplingOptions(top_k=1)


@pytest.fixture(scope="module")
def vec(lina_dir):
    return load_file(str(lina_dir / "vectors.safetensors"))


@pytest.fixture
def engine(model, codec):
    return Engine(model, StreamingDecoder(codec))


def texts(vec):
    ids = vec["text_ids"][0].tolist()
    return [ids, ids[:12] + [EOS], ids[:5] + ids[14:]]


async def drain(handle):
    chunks = []
    async for chunk in handle:
        chunks.append(chunk)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


async def tokens_alone(engine, jobs):
    """Each job's tokens when it runs by itself on ``engine`` (one after the other)."""
    alone = []
    for job in jobs:
        handle = engine.submit(job)
        await run_all(engine, [handle])
        alone.append(handle.stats.tokens)
    return alone


async def run_all(engine, handles, max_iters=2000):
    """Drive the loop on this thread until every handle finished; return their audio."""
    tasks = [asyncio.ensure_future(drain(h)) for h in handles]
    for _ in range(max_iters):
        if all(h.done for h in handles):
            break
        engine.run_once()
        await asyncio.sleep(0)
    return [await t for t in tasks]


async def test_prompt_prefill_reproduces_upstream_greedy_continuation(engine, vec):
    """Upstream's greedy continuation, exactly, until upstream samples a special token (PAD at
    its step 22): the engine never samples PAD/BOS and takes the best speech token instead."""
    job = GenerationJob(
        vec["text_ids"][0].tolist(), max_frames=100, sampling=GREEDY, prompt_codes=vec["prompt_codes"][0]
    )
    handle = engine.submit(job)
    (audio,) = await run_all(engine, [handle])
    upstream = vec["greedy_tokens"][0, 12:].tolist()  # upstream: continuation from step 12
    first_special = next(i for i, t in enumerate(upstream) if t in (PAD, BOS))
    assert first_special == 10  # (the fixture's PAD at step 22)
    tokens = handle.stats.tokens
    assert tokens[:first_special] == upstream[:first_special]
    logits = vec["greedy_logits"][0, 12 + first_special].clone()  # upstream's logits at that step
    logits[[PAD, BOS]] = float("-inf")
    assert tokens[first_special] == int(logits.argmax()) != upstream[first_special]
    assert PAD not in tokens and BOS not in tokens
    assert handle.stats.stop_reason in ("eos", "max_frames")
    frames = handle.stats.frames
    assert frames == len(tokens) - (tokens[-1] == EOS) and frames <= 100
    assert audio.shape == (frames * 320,) and audio.dtype == np.float32
    assert np.abs(audio).max() > 0


async def test_greedy_tokens_same_alone_in_a_batch_and_joining_mid_flight(engine, model, codec, vec):
    jobs = [GenerationJob(t, max_frames=30, sampling=GREEDY) for t in texts(vec)]
    jobs.append(GenerationJob(texts(vec)[0], max_frames=30, sampling=GREEDY, prompt_codes=vec["prompt_codes"][0, :5]))
    jobs.append(GenerationJob(texts(vec)[1], max_frames=30, sampling=GREEDY, prompt_codes=vec["prompt_codes"][0, 5:10]))
    alone = await tokens_alone(engine, jobs)

    together = [engine.submit(job) for job in jobs]
    await run_all(engine, together)
    assert [h.stats.tokens for h in together] == alone

    fresh = Engine(model, StreamingDecoder(codec))
    first = [fresh.submit(jobs[0]), fresh.submit(jobs[1])]
    for _ in range(7):  # let them run a few steps, then the others join
        fresh.run_once()
    late = [fresh.submit(jobs[2]), fresh.submit(jobs[3]), fresh.submit(jobs[4])]  # 3 and 4 prefill together
    await run_all(fresh, first + late)
    assert [h.stats.tokens for h in first + late] == alone


async def test_seeded_sampling_is_reproducible_and_batch_independent(engine, vec):
    opts = SamplingOptions(top_k=20, temperature=0.9, seed=1234)
    job = GenerationJob(texts(vec)[0], max_frames=25, sampling=opts)
    a = engine.submit(job)
    await run_all(engine, [a])
    others = [
        engine.submit(GenerationJob(t, max_frames=25, sampling=SamplingOptions(seed=i)))
        for i, t in enumerate(texts(vec))
    ]
    b = engine.submit(job)
    await run_all(engine, others + [b])
    assert a.stats.tokens == b.stats.tokens
    c = engine.submit(GenerationJob(texts(vec)[0], max_frames=25, sampling=SamplingOptions(top_k=20, seed=99)))
    await run_all(engine, [c])
    assert c.stats.tokens != a.stats.tokens


async def test_max_length_guard_and_pcm_length(engine, vec):
    handle = engine.submit(GenerationJob(texts(vec)[1], max_frames=17, sampling=GREEDY))
    (audio,) = await run_all(engine, [handle])
    if handle.stats.stop_reason == "max_frames":
        assert handle.stats.frames == 17 and EOS not in handle.stats.tokens
    assert handle.stats.frames <= 17
    assert audio.shape == (handle.stats.frames * 320,)


async def test_every_stop_gives_pcm_matching_the_frames(engine, vec):
    handles = [
        engine.submit(GenerationJob(t, max_frames=n, sampling=SamplingOptions(seed=n)))
        for t, n in zip(texts(vec) * 2, (1, 3, 41, 60, 88, 7))
    ]
    audio = await run_all(engine, handles)
    for handle, samples in zip(handles, audio):
        assert handle.stats.stop_reason in ("eos", "max_frames")
        assert samples.shape == (handle.stats.frames * 320,)
        assert len(handle.stats.tokens) == handle.stats.frames + (handle.stats.stop_reason == "eos")


async def test_audio_streams_before_the_utterance_ends(engine, vec):
    handle = engine.submit(GenerationJob(texts(vec)[0], max_frames=120, sampling=GREEDY))
    first_chunk_at = None
    task = asyncio.ensure_future(drain(handle))
    for step in range(200):
        if handle.done:
            break
        engine.run_once()
        await asyncio.sleep(0)
        if first_chunk_at is None and not handle._queue.empty():
            first_chunk_at = step
    audio = await task
    assert handle.stats.frames > engine.decoder.config.first_window
    assert first_chunk_at is not None and first_chunk_at < handle.stats.frames - 10
    assert audio.shape == (handle.stats.frames * 320,)


async def test_cancel_frees_the_row_before_the_next_step(engine, vec):
    keep = engine.submit(GenerationJob(texts(vec)[0], max_frames=40, sampling=GREEDY))
    gone = engine.submit(GenerationJob(texts(vec)[1], max_frames=40, sampling=GREEDY))
    engine.run_once()
    assert len(engine.batch) == 2
    gone.cancel()
    engine.run_once()
    assert len(engine.batch) == 1 and engine.batch.rows[0].handle is keep
    await run_all(engine, [keep, gone])
    assert len(engine.batch) == 0


async def test_queue_bound_and_deadline(model, codec, vec):
    engine = Engine(model, StreamingDecoder(codec), EngineSettings(max_queue=2))
    engine.submit(GenerationJob(texts(vec)[0], max_frames=5))
    engine.submit(GenerationJob(texts(vec)[0], max_frames=5))
    with pytest.raises(OverloadedError):
        engine.submit(GenerationJob(texts(vec)[0], max_frames=5))

    overdue = GenerationJob(texts(vec)[0], max_frames=500, deadline=time.monotonic() + 0.3)
    engine2 = Engine(model, StreamingDecoder(codec))
    handle = engine2.submit(overdue)
    engine2.run_once()  # admitted and stepping
    assert len(engine2.batch) == 1
    time.sleep(0.35)
    with pytest.raises(DeadlineExceededError):
        await run_all(engine2, [handle])
    assert len(engine2.batch) == 0


async def test_a_failing_request_fails_alone(engine, vec):
    from wyoming_lina.model import InitialState

    bad = GenerationJob(texts(vec)[0], max_frames=10, initial_state=InitialState([torch.zeros(1, 2, 16, 32)]))
    good = GenerationJob(texts(vec)[0], max_frames=10, sampling=GREEDY)
    bad_handle, good_handle = engine.submit(bad), engine.submit(good)
    tasks = [asyncio.ensure_future(drain(h)) for h in (bad_handle, good_handle)]
    for _ in range(50):
        engine.run_once()
        await asyncio.sleep(0)
    with pytest.raises(SynthesisError, match="layers"):
        await tasks[0]
    assert (await tasks[1]).shape == (good_handle.stats.frames * 320,)


async def test_engine_thread_serves_concurrent_requests(model, codec, vec):
    engine = Engine(model, StreamingDecoder(codec))
    engine.start()
    try:
        handles = [engine.submit(GenerationJob(t, max_frames=20, sampling=GREEDY)) for t in texts(vec)]
        audio = await asyncio.wait_for(asyncio.gather(*(drain(h) for h in handles)), 60)
        assert all(a.shape == (h.stats.frames * 320,) for a, h in zip(audio, handles))
    finally:
        engine.stop()
    assert engine.load == (0, 0)


async def test_graph_buffers_give_the_same_tokens_as_the_plain_step(model, codec, vec):
    """The CUDA-graph step's buffer handling, run eagerly on CPU: rows joining, leaving, padding."""
    from wyoming_lina.engine.graphed_step import GraphConfig

    jobs = [GenerationJob(t, max_frames=n, sampling=GREEDY) for t, n in zip(texts(vec), (30, 9, 22))]
    jobs.append(
        GenerationJob(
            texts(vec)[0],
            max_frames=25,
            sampling=SamplingOptions(top_k=30, seed=5),
            prompt_codes=vec["prompt_codes"][0, :5],
        )
    )
    expected = await tokens_alone(Engine(model, StreamingDecoder(codec)), jobs)

    graphed = Engine(
        model,
        StreamingDecoder(codec),
        EngineSettings(graphs=GraphConfig(batch_buckets=(2, 4, 8), text_buckets=(32, 64), capture=False), max_batch=8),
    )
    first = [graphed.submit(jobs[0]), graphed.submit(jobs[1])]
    for _ in range(5):
        graphed.run_once()
    late = [graphed.submit(jobs[2]), graphed.submit(jobs[3])]
    await run_all(graphed, first + late)
    assert [h.stats.tokens for h in first + late] == expected


async def test_rows_of_different_state_voices_admitted_together_keep_their_own_state(model, codec, vec):
    from wyoming_lina.model import InitialState

    cfg = model.config.gla
    gen = torch.Generator().manual_seed(3)

    def voice():
        return InitialState(
            [torch.randn(1, cfg.heads, cfg.head_k, cfg.head_v, generator=gen) for _ in range(2 * model.config.n_layer)]
        )

    a, b = voice(), voice()
    text = texts(vec)[0]
    jobs = [GenerationJob(text, max_frames=12, sampling=GREEDY, initial_state=s) for s in (a, a, b, None, a)]
    alone = await tokens_alone(Engine(model, StreamingDecoder(codec)), jobs)
    assert alone[0] != alone[2] != alone[3]  # the voices matter
    engine = Engine(model, StreamingDecoder(codec))
    handles = [engine.submit(job) for job in jobs]
    await run_all(engine, handles)
    assert [h.stats.tokens for h in handles] == alone


class _LateEvent:
    """A codec that finishes ``lag`` polls after its launch (stands in for a CUDA event)."""

    def __init__(self, lag: int):
        self.left = lag

    def query(self) -> bool:
        self.left -= 1
        return self.left < 0

    def synchronize(self) -> None:
        self.left = -1


def queued_engine(model, decoder) -> Engine:
    """The CUDA loop's bookkeeping run eagerly on the CPU: graphed-step buffers, 3 steps queued
    ahead of the host, decodes batched over 5 steps."""
    from wyoming_lina.engine.graphed_step import GraphConfig

    graphs = GraphConfig(batch_buckets=(4,), text_buckets=(64,), capture=False)
    return Engine(model, decoder, EngineSettings(graphs=graphs, max_batch=4, decode_interval=5, pipeline_depth=3))


class _LaggingDecoder(StreamingDecoder):
    def __init__(self, codec, lag: int):
        super().__init__(codec)
        self.lag = lag
        self.launches = 0

    def launch(self, jobs):
        launched = super().launch(jobs)
        for part in launched:
            part.event = _LateEvent(self.lag)
        self.launches += 1
        return launched


async def test_audio_and_ends_stay_in_order_while_the_codec_lags(model, codec, vec):
    """On CUDA the codec runs on its own stream and its audio is handed out steps later: every
    row must still get all its audio, in order, before it hears that it ended."""

    jobs = [
        GenerationJob(t, max_frames=n, sampling=SamplingOptions(top_k=20, seed=i))
        for i, (t, n) in enumerate(zip(texts(vec), (70, 9, 45)))
    ]
    plain = Engine(model, StreamingDecoder(codec))
    expected = await run_all(plain, [plain.submit(job) for job in jobs])

    lagging = _LaggingDecoder(codec, lag=7)
    engine = queued_engine(model, lagging)
    handles = [engine.submit(job) for job in jobs]
    audio = await run_all(engine, handles)
    assert lagging.launches >= 3
    for got, want, handle in zip(audio, expected, handles):
        assert handle.stats.frames * 320 == len(got) == len(want)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert engine.outputs.idle and not engine.batch.rows


async def test_no_step_is_launched_past_every_rows_frame_limit(model, codec, vec):
    """With steps queued ahead of the host, the engine must not launch steps nobody needs: once
    every row meets its frame limit in a launched step, it stops stepping (at 256 rows each
    wasted step costs ~1.8 ms of GPU), and each row still gets exactly its frames."""

    jobs = [
        GenerationJob(t, max_frames=n, sampling=SamplingOptions(top_k=20, seed=i))
        for i, (t, n) in enumerate(zip(texts(vec), (10, 7)))
    ]
    engine = queued_engine(model, StreamingDecoder(codec))
    handles = [engine.submit(job) for job in jobs]
    audio = await run_all(engine, handles)
    assert [len(a) for a in audio] == [h.stats.frames * 320 for h in handles]
    assert handles[0].stats.stop_reason == "max_frames" and handles[0].stats.frames == 10
    assert engine.steps == 10  # not 10 + the 3 steps that were queued when the host saw the limit


def test_engine_options_per_device(model):
    from wyoming_lina.engine import streaming_config_for

    cuda = EngineSettings.for_device("cuda")
    assert cuda.graphs.capture and cuda.graphs.compile and cuda.decode_interval > 1 and cuda.pad_prefill
    assert cuda.pipeline_depth > 1
    assert cuda.max_admit_per_step > cuda.max_prefill_batch  # state voices join at once, prompts prefill in parts
    assert EngineSettings.for_device("cuda", compile=False).graphs.compile is False
    cpu = EngineSettings.for_device("cpu")
    assert cpu.graphs is None and cpu.decode_interval == 1
    # the one-kernel GLA step is the model's choice, made once: on CUDA with Triton only
    layers = [m for m in model.modules() if hasattr(m, "fused_step")]
    assert layers and not any(m.fused_step for m in layers)  # a CPU model never takes it
    assert streaming_config_for("cuda:0").max_hop == 144  # GPU: doubling hops, fewer decodes
    assert streaming_config_for("cpu").max_hop is None  # CPU: constant hops, no underrun at 1x


async def test_prompt_requests_admitted_together_prefill_in_capped_batches(model, codec, vec):
    """Five prompt requests admitted in one iteration prefill as batches of 2, 2 and 1 (the cap
    keeps a burst of requests from running one huge prefill); each generates what it would alone."""
    prompt = vec["prompt_codes"][0, :6]
    jobs = [
        GenerationJob(texts(vec)[i % 3], max_frames=10, sampling=SamplingOptions(top_k=20, seed=i), prompt_codes=prompt)
        for i in range(5)
    ]
    alone = await tokens_alone(Engine(model, StreamingDecoder(codec)), jobs)
    engine = Engine(
        model, StreamingDecoder(codec), EngineSettings(pad_prefill=True, max_admit_per_step=8, max_prefill_batch=2)
    )
    sizes = []
    prefill = model.prefill_from_encoded

    def spy(ctx, encoded, state):
        sizes.append(encoded.shape[0])
        return prefill(ctx, encoded, state)

    model.prefill_from_encoded = spy
    try:
        assert engine.warm_prefill(prompt_frames=4) == [1, 2]
        sizes.clear()
        handles = [engine.submit(job) for job in jobs]
        await run_all(engine, handles)
    finally:
        del model.prefill_from_encoded
    assert sizes == [2, 2, 1]
    assert [h.stats.tokens for h in handles] == alone


def test_queued_steps_grow_with_the_batch(model, codec):
    """At small batch the host keeps up and every queued step delays a first window or an EOS:
    4 at most; at 256 rows the CUDA setting's 32."""
    deep = EngineSettings(pipeline_depth=EngineSettings.for_device("cuda").pipeline_depth)
    assert [deep.queued_steps(n) for n in (1, 32, 64, 128, 256)] == [4, 4, 8, 16, 32]
    assert EngineSettings.for_device("cpu").queued_steps(256) == 1  # CPU: no queue


def test_prefill_batches_pad_to_powers_of_two():
    from wyoming_lina.engine.prefill import padded_batch

    assert [padded_batch(n) for n in (1, 2, 3, 4, 5, 8, 9, 16)] == [1, 2, 4, 4, 8, 8, 16, 16]


async def test_padded_prefill_gives_each_row_its_own_result(model, codec, vec):
    """Three prompt requests prefill as a padded batch of four: each generates what it would alone."""
    prompt = vec["prompt_codes"][0, :6]
    jobs = [
        GenerationJob(t, max_frames=12, sampling=SamplingOptions(top_k=20, seed=i), prompt_codes=prompt)
        for i, t in enumerate(texts(vec)[:3])
    ]
    alone = await tokens_alone(Engine(model, StreamingDecoder(codec)), jobs)
    padded = Engine(model, StreamingDecoder(codec), EngineSettings(pad_prefill=True))
    assert padded.warm_prefill(prompt_frames=4) == [1, 2, 4, 8, 16]  # max_prefill_batch = 16
    handles = [padded.submit(job) for job in jobs]
    await run_all(padded, handles)
    assert [h.stats.tokens for h in handles] == alone
    assert Engine(model, StreamingDecoder(codec)).warm_prefill() == []  # CPU default: no padding


async def run_through_one_out_of_memory(engine, model, tasks, monkeypatch):
    """Make the next model step raise a (simulated) CUDA out-of-memory error, then drive the loop
    until the drains in ``tasks`` finish; returns their results (audio or the exception)."""
    calls = []

    def once_out_of_memory(real):
        def step(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real(*args, **kwargs)

        return step

    for name in ("step", "step_in_place"):  # the plain step, and the graphed step's
        monkeypatch.setattr(model, name, once_out_of_memory(getattr(model, name)))
    for _ in range(60):
        engine.run_once_safely()
        await asyncio.sleep(0)
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_out_of_memory_fails_only_the_newest_rows(model, codec, vec, monkeypatch):
    engine = Engine(model, StreamingDecoder(codec))
    handles = [engine.submit(GenerationJob(t, max_frames=12, sampling=GREEDY)) for t in texts(vec)]
    handles.append(engine.submit(GenerationJob(texts(vec)[0], max_frames=12, sampling=GREEDY)))
    tasks = [asyncio.ensure_future(drain(h)) for h in handles]
    engine.run_once_safely()  # admitted, one step
    results = await run_through_one_out_of_memory(engine, model, tasks, monkeypatch)
    assert all(isinstance(r, np.ndarray) and len(r) == 12 * 320 for r in results[:2])  # oldest finish
    assert all(isinstance(r, OverloadedError) for r in results[2:])  # newest fail, clearly
    assert engine.scheduler.max_batch == 2 and len(engine.batch) == 0


async def test_out_of_memory_keeps_the_steps_already_queued_for_the_survivors(model, codec, vec, monkeypatch):
    """With steps queued ahead of the host (CUDA), an out-of-memory failure must not drop the
    queued steps' tokens: the surviving rows keep every frame and end at their frame limit."""

    jobs = [GenerationJob(t, max_frames=12, sampling=GREEDY) for t in texts(vec)] + [
        GenerationJob(texts(vec)[0], max_frames=12, sampling=GREEDY)
    ]
    alone = await tokens_alone(Engine(model, StreamingDecoder(codec)), jobs[:2])
    engine = queued_engine(model, StreamingDecoder(codec))
    handles = [engine.submit(job) for job in jobs]
    tasks = [asyncio.ensure_future(drain(h)) for h in handles]
    for _ in range(5):  # admitted; steps queued ahead of the host
        engine.run_once_safely()
    assert engine.runner.queued == 3
    results = await run_through_one_out_of_memory(engine, model, tasks, monkeypatch)
    assert all(isinstance(r, np.ndarray) and len(r) == 12 * 320 for r in results[:2]), results[:2]
    assert [h.stats.tokens for h in handles[:2]] == alone
    assert all(isinstance(r, OverloadedError) for r in results[2:])


async def test_voice_prompt_encoder_pass_is_cached_and_reused(model, codec, vec):
    """The text-independent encoder pass over a voice prompt runs once per voice; a request that
    reuses it generates exactly what it generates on a fresh engine."""
    prompt = vec["prompt_codes"][0, :8]
    job = GenerationJob(texts(vec)[1], max_frames=10, sampling=SamplingOptions(top_k=20, seed=3), prompt_codes=prompt)
    fresh = Engine(model, StreamingDecoder(codec))
    handle = fresh.submit(job)
    await run_all(fresh, [handle])
    engine = Engine(model, StreamingDecoder(codec))
    other_text = GenerationJob(texts(vec)[0], max_frames=4, sampling=GREEDY, prompt_codes=prompt)
    await run_all(engine, [engine.submit(other_text)])
    assert len(engine.runner.prefill.prompts) == 1
    again = engine.submit(job)  # same voice prompt, another text: served from the cache
    await run_all(engine, [again])
    assert len(engine.runner.prefill.prompts) == 1 and again.stats.tokens == handle.stats.tokens


def test_split_prefill_equals_the_parallel_pass(model, vec):
    text = vec["text_ids"]
    audio = vec["audio_in"][:, :12]
    ctx = model.encode_text(text)
    _, whole = model.forward_audio(ctx, audio, model.init_state(1))
    encoded, state = model.encode_audio(audio, model.init_state(1))
    split = model.prefill_from_encoded(ctx, encoded, state)
    for a, b in zip(whole.layers, split.layers):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_staging_ring_hands_out_disjoint_memory_first_in_first_out():
    """The codec's pinned staging memory: regions in use never overlap, each keeps what was
    written to it until it is given back (oldest first), the ring wraps around, and a request
    that does not fit is refused (counted) instead of overwriting anything."""
    import random

    from wyoming_lina.engine.transfer import StagingRing

    ring = StagingRing(4096, pin=False)
    rng = random.Random(0)
    live: list = []  # (tensor, region, value), oldest first
    wrapped = refused = 0
    for step in range(3000):
        if live and (rng.random() < 0.45 or len(live) > 6):
            tensor, region, value = live.pop(0)
            assert torch.all(tensor == value), "a region was overwritten while in use"
            ring.release(region)
            continue
        shape = (rng.randint(1, 40), rng.randint(1, 8))
        dtype = rng.choice([torch.float32, torch.long, torch.uint8])
        got = ring.alloc(shape, dtype)
        if got is None:
            refused += 1
            continue
        tensor, region = got
        assert tensor.shape == shape and tensor.dtype == dtype and 0 <= region[0] < region[1] <= 4096
        assert region[0] % StagingRing.ALIGN == 0
        wrapped += bool(live) and region[0] < live[-1][1][0]
        for _, other, _ in live:
            assert region[1] <= other[0] or other[1] <= region[0], (region, other)
        tensor.fill_(step % 100)
        live.append((tensor, region, step % 100))
    assert wrapped > 50 and refused > 10 and ring.misses == refused
    with pytest.raises(ValueError, match="out of order"):
        ring.release(live[-1][1] if len(live) > 1 else (1, 2))
    ring.reset()
    assert ring.in_use == 0 and ring.alloc((1024,), torch.float32)[1] == (0, 4096)
    assert ring.alloc((1,), torch.uint8) is None  # full


def test_launched_decode_gives_its_staging_memory_back_once_taken():
    from wyoming_lina.codec import CodecStream, StreamingConfig
    from wyoming_lina.engine.decoding import LaunchedDecode
    from wyoming_lina.engine.transfer import StagingRing

    ring = StagingRing(1 << 16, pin=False)
    stream = CodecStream(StreamingConfig(first_window=4, window=10, hop=3, lookahead=2, crossfade=1), 320)
    stream.push(range(6))
    window = stream.next_window(final=True)
    audio, region = ring.alloc((1, 320 * window.size), torch.float32)
    audio.fill_(0.25)
    decode = LaunchedDecode([("row", stream, window)], [audio.numpy()[0]], None, [audio], ring, [region])
    assert ring.in_use == 1
    [(row, samples)] = decode.results()
    assert row == "row" and samples.shape == (320 * 6,) and np.all(samples == 0.25)
    assert ring.in_use == 0
    audio.fill_(-1.0)  # the ring's memory is reused: the samples handed out are a copy
    assert np.all(samples == 0.25)


def test_staging_ring_rolls_back_its_newest_regions():
    from wyoming_lina.engine.transfer import StagingRing

    ring = StagingRing(1024, pin=False)
    first = ring.alloc((16,), torch.float32)[1]
    second = ring.alloc((16,), torch.float32)[1]
    with pytest.raises(ValueError, match="newest"):
        ring.rollback(first)
    ring.rollback(second)
    ring.release(first)
    assert ring.in_use == 0


def test_every_batch_and_every_change_has_its_own_generation():
    """The graphed step recognises the batch its buffers hold by generation alone: a new batch
    (after a failure cleared the old one, whose id may be reused) must never look bound."""
    from wyoming_lina.engine.batch import ActiveBatch

    seen = set()
    for _ in range(100):
        batch = ActiveBatch()  # freed at once: ids repeat, generations must not
        assert batch.generation not in seen
        seen.add(batch.generation)


async def test_handles_hear_audio_then_their_own_end_sent_together_from_another_thread():
    """What the engine thread hands out for many rows at once (one wake-up of the event loop)
    reaches each caller in order: its audio, then its end or its own error, once."""
    from wyoming_lina.engine.job import JobHandle

    loop = asyncio.get_running_loop()
    handles = [JobHandle(GenerationJob([1, 5, 2], max_frames=5), loop) for _ in range(3)]
    boom = SynthesisError("boom")

    def engine_thread():
        JobHandle.deliver_many([(h, np.full(4, i, np.float32)) for i, h in enumerate(handles)])
        JobHandle.finish_many([(handles[0], None), (handles[1], boom), (handles[2], None), (handles[0], boom)])

    await asyncio.to_thread(engine_thread)
    assert (await drain(handles[0])).tolist() == [0.0] * 4  # its end came first: a later error means nothing
    with pytest.raises(SynthesisError, match="boom"):
        await drain(handles[1])
    assert (await drain(handles[2])).tolist() == [2.0] * 4
    assert all(h.done and h.stats.finished is not None for h in handles)

    closed = asyncio.new_event_loop()
    closed.close()
    orphan = JobHandle(GenerationJob([1, 5, 2], max_frames=5), closed)
    JobHandle.finish_many([(orphan, None)])  # nobody listens any more: the row is dropped
    assert orphan.cancelled
