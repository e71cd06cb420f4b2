"""A server on a CPU: the quantized step in the engine, the threads and quantization options, the
start-up speed report, and streaming windows chosen from the measured speed (fixture models)."""

from __future__ import annotations

import asyncio
import time

import pytest
from safetensors.torch import load_file
from test_reliability_support import WyomingSocket, check_plain, frame
from test_server_e2e import start_server

from wyoming_lina.codec.streaming import StreamingConfig, decode_cost
from wyoming_lina.engine import Engine, EngineSettings, GenerationJob, SamplingOptions, StreamingDecoder
from wyoming_lina.engine.cpu_speed import (
    CpuSpeed,
    choose_codec_dtype,
    choose_streaming,
    describe,
    measure_codec,
    simulate,
)
from wyoming_lina.model import BOS, PAD
from wyoming_lina.server.options import parse_args

pytestmark = pytest.mark.usefixtures("one_thread")


def speed(step_ms: float, frame_ms: float = 0.45) -> CpuSpeed:
    return CpuSpeed(threads=2, step_ms=step_ms, codec_call_ms=23.0, codec_frame_ms=frame_ms, text_ms=35.0)


def test_streaming_is_chosen_to_keep_up_with_the_measured_speed():
    fast, keeps_up = choose_streaming(speed(5.0))
    assert keeps_up
    first, rtf, margin = simulate(fast, 270, speed(5.0), 35.0)
    assert rtf < 0.8 and margin >= 50 and first <= 800
    # near real time it still finds windows that never run dry, for short and long sentences
    tight, keeps_up = choose_streaming(speed(9.0))
    assert keeps_up and all(simulate(tight, n, speed(9.0), 35.0)[2] >= 50 for n in (60, 270, 750))
    # with the engine's fixed CPU windows the same machine decodes more per frame of speech
    assert decode_cost(270, tight) < decode_cost(270, StreamingConfig())


def test_a_step_just_under_a_frame_still_keeps_up_with_first_audio_within_800_ms():
    """The 2-core Xeon with the ONNX step and the bfloat16 codec (docs/cpu.md: a step of ~12 ms, a
    frame is 13.3): windows that never run dry for short and long sentences, the first audio of a
    state voice within 800 ms (first window 56, hop 32: ~750 ms), not a fallback that pauses."""
    near = CpuSpeed(threads=2, step_ms=12.0, codec_call_ms=20.5, codec_frame_ms=0.14, text_ms=34.0)
    config, keeps_up = choose_streaming(near)
    assert keeps_up, config
    assert all(simulate(config, n, near, 34.0)[2] >= 50 for n in (60, 270, 750))
    assert simulate(config, 270, near, 34.0)[0] <= 800
    line = describe(near, config, keeps_up)
    assert "SLOWER" not in line and "pause" not in line, line


def test_a_machine_slower_than_real_time_gets_the_lowest_real_time_factor_and_says_so():
    config, keeps_up = choose_streaming(speed(20.0))
    assert not keeps_up
    line = describe(speed(20.0), config, keeps_up)
    assert "SLOWER than real time" in line and "pause" in line
    assert "faster than real time" in describe(speed(5.0), *choose_streaming(speed(5.0)))


def test_the_codec_runs_in_bfloat16_only_where_that_measured_faster(codec_dir):
    """Kept in bfloat16 when it is faster (here forced: any gain will do), it decodes what the
    float32 codec does to within bfloat16's rounding; not kept (forced: it would have to take no
    time), the float32 weights are back bit for bit."""
    import torch

    from wyoming_lina.codec import load_codec

    def fresh():
        codec = load_codec(codec_dir / "config.yaml", codec_dir / "model.ckpt")
        codec.backbone.fold_layer_scales()
        codec.backbone.cache_conv_weights()
        return codec

    codec = fresh()
    codes = torch.randint(0, codec.codebook_size, (1, 60), generator=torch.Generator().manual_seed(0))
    want = codec.decode(codes, check=False)
    before = {k: v.clone() for k, v in codec.backbone.state_dict().items()}
    float32 = CpuSpeed(1, 10.0, *measure_codec(codec), 5.0)
    assert float32.codec_dtype == "float32"

    kept = choose_codec_dtype(codec, float32, min_gain=-1e9)
    assert kept.codec_dtype == "bfloat16" and codec.backbone_dtype == torch.bfloat16
    got = codec.decode(codes, check=False)
    snr = 10 * torch.log10(want.pow(2).sum() / (want - got.float()).pow(2).sum())
    assert snr > 30, f"bfloat16 codec {snr:.1f} dB from float32"  # docs/codec.md: 46 dB on the fixture

    codec = fresh()
    not_kept = choose_codec_dtype(codec, float32, min_gain=1.0)
    assert not_kept == float32 and codec.backbone_dtype == torch.float32
    after = codec.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(codec.decode(codes, check=False), want)


@pytest.mark.parametrize(
    "argv, message",
    [(["serve", "--threads", "0"], "between 1 and"), (["serve", "--cpu-quant", "int4"], "invalid choice")],
)
def test_cpu_options_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_cpu_options_defaults():
    args = parse_args(["serve"])
    assert args.cpu_quant == "q8" and args.threads is None  # all cores


async def test_the_quantized_step_serves_rows_within_their_bounds(model, codec, lina_dir):
    ids = load_file(str(lina_dir / "vectors.safetensors"))["text_ids"][0].tolist()
    engine = Engine(model, StreamingDecoder(codec), EngineSettings(cpu_quant="q8"))
    assert engine.runner.quantized is not None
    jobs = [
        GenerationJob(ids, max_frames=40, min_frames=15, sampling=SamplingOptions(top_k=20, seed=s)) for s in range(4)
    ]
    handles = [engine.submit(job) for job in jobs]

    async def drain(handle):
        return sum([len(c) async for c in handle])

    tasks = [asyncio.ensure_future(drain(h)) for h in handles]
    for _ in range(500):
        if all(h.done for h in handles):
            break
        engine.run_once()
        await asyncio.sleep(0)
    audio = [await t for t in tasks]
    for handle, samples in zip(handles, audio):
        tokens = handle.stats.tokens
        assert 15 <= handle.stats.frames <= 40 and samples == handle.stats.frames * 320
        assert PAD not in tokens and BOS not in tokens


def test_the_server_reports_its_cpu_speed_and_serves(tmp_path, lina_dir, codec_dir):
    server = start_server(tmp_path, lina_dir, codec_dir, "--threads", "1")
    try:
        deadline = time.monotonic() + 60
        while "ready: speaking" not in server.stderr() and time.monotonic() < deadline:
            time.sleep(0.2)
        log = server.stderr()
        assert "RUNNING ON CPU" in log and "quantized decode step" in log, log
        assert "CPU speed (1 threads)" in log and "than real time" in log and "Streaming windows" in log, log
        # chosen before it speaks: every stream opens with the same windows (same seed, same audio)
        assert log.index("Streaming windows") < log.index("ready: speaking"), log
        with WyomingSocket(server.port) as client:
            client.send(frame("synthesize", {"text": "Hello there."}))
            check_plain(client.read_until("audio-stop"))
    finally:
        server.stop()
