"""Streaming decode: window bookkeeping (exact, with a local fake decoder) and accuracy on the fixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wyoming_lina.codec import CodecStream, StreamingConfig
from wyoming_lina.codec.streaming import decode_cost, fade_in, stream_schedule

HOP = 320
# Documented in docs/codec.md (bench/codec_streaming.py, fixture model, i.i.d. tokens, 20 s):
# the default setting measures 31.7 dB SNR and 0.040 max abs difference against a full decode.
FIXTURE_MIN_SNR_DB = 28.0
FIXTURE_MAX_ABS = 0.08

CONFIGS = [
    StreamingConfig(),
    StreamingConfig(first_window=4, window=10, hop=3, lookahead=2, crossfade=1),
    StreamingConfig(first_window=6, window=9, hop=5, lookahead=4, crossfade=0),
    StreamingConfig(first_window=3, window=4, hop=2, lookahead=2, crossfade=2),
    StreamingConfig(first_window=5, window=16, hop=2, lookahead=2, crossfade=1, max_hop=9),
    StreamingConfig(max_hop=96),
    StreamingConfig(max_hop=144, final_step=12),  # the GPU geometry
    StreamingConfig(first_window=5, window=16, hop=2, lookahead=2, crossfade=1, max_hop=9, final_step=3),
    # hop > first_window - lookahead, last windows on the grid only: not every last window can
    # take one of final_sizes and still cover what is left (falls back to the exact window)
    StreamingConfig(first_window=4, window=10, hop=3, lookahead=2, crossfade=1, final_step=50),
]


def local_decode(codes: torch.Tensor) -> np.ndarray:
    """A perfectly local 'decoder': frame f becomes a 320-sample ramp from code to code + 0.5."""
    codes = codes.numpy().astype(np.float32)
    return np.repeat(codes, HOP) + np.tile(np.linspace(0, 0.5, HOP, dtype=np.float32), len(codes))


def run(codes: torch.Tensor, config: StreamingConfig, push: int) -> tuple[np.ndarray, list]:
    stream = CodecStream(config, HOP)
    pieces, windows = [], []
    t = 0
    while True:
        final = t >= len(codes)
        if not final:
            stream.push(codes[t : t + push])
            t += push
        while (window := stream.next_window(final=final)) is not None:
            windows.append(window)
            assert torch.equal(window.codes, codes[window.start : window.start + window.size])
            pieces.append(stream.take(window, local_decode(window.codes)))
        if final:
            break
    assert stream.finished
    return (np.concatenate(pieces) if pieces else np.zeros(0, np.float32)), windows


@pytest.mark.parametrize(
    "config",
    CONFIGS,
    ids=lambda c: f"{c.first_window}-{c.window}-{c.hop}-{c.lookahead}-{c.crossfade}-{c.max_hop}-{c.final_step}",
)
@pytest.mark.parametrize("push", [1, 7, 10_000])
def test_local_decoder_is_reproduced_exactly(config, push):
    """With a local decoder every window agrees, so any misplaced sample shows as a difference."""
    gen = torch.Generator().manual_seed(push)
    for num in [0, 1, 2, config.first_window - 1, config.first_window, config.window, config.window + 1, 57, 400]:
        codes = torch.randint(1, 64, (max(num, 0),), generator=gen)
        out, windows = run(codes, config, push)
        assert out.dtype == np.float32 and out.shape == (HOP * len(codes),)
        # crossfades of identical signals only round; a sample misplaced by one is off by 1.6e-3
        np.testing.assert_allclose(out, local_decode(codes), atol=1e-4, rtol=0)
        assert all(w.size <= config.window for w in windows)
        emitted = [(w.emit_start, w.emit_end) for w in windows]
        assert all(a < b for a, b in emitted) and all(b == c for (_, b), (c, _) in zip(emitted, emitted[1:]))


def test_windows_follow_the_grid_and_share_sizes():
    cfg = StreamingConfig(first_window=32, window=300, hop=24, lookahead=8, crossfade=4)
    spans = stream_schedule(1000, cfg)
    first = spans[0]
    assert first == (0, 32, 0, 24)  # first audio after 32 codes: 24 frames
    ends = [e for _, e, _, _ in spans[:-1]]
    assert ends == list(range(32, ends[-1] + 1, 24))
    sizes = [e - s for s, e, _, _ in spans[:-1]]
    assert sizes[-1] == 300 and sizes == sorted(sizes)  # windows grow to the steady size, then stay
    assert spans[-1][1] == 1000 and spans[-1][3] == 1000
    assert decode_cost(1000, cfg) > 1


def test_hops_double_up_to_max_hop_and_cut_the_decode_work():
    cfg = StreamingConfig(first_window=36, window=300, hop=24, lookahead=12, crossfade=2, max_hop=96)
    spans = stream_schedule(3000, cfg)
    ends = [e for _, e, _, _ in spans[:-1]]
    assert ends[:6] == [36, 60, 108, 204, 300, 396]  # +24, +48, +96, +96, ...
    assert all(b - a == 96 for a, b in zip(ends[2:], ends[3:]))
    constant = StreamingConfig(first_window=36, window=300, hop=24, lookahead=12, crossfade=2)
    assert decode_cost(3000, cfg) < 0.4 * decode_cost(3000, constant)


def first_underrun(config: StreamingConfig, speed: float, num_codes: int = 3000) -> int | None:
    """Codes arrive at ``speed`` x real time and audio plays from its first chunk on: the first
    window (index) that became ready after playback had run out of audio, or None."""
    spans = stream_schedule(num_codes, config)
    playback_start = spans[0][1] / speed
    for index, (_, end, emit_start, _) in enumerate(spans[1:-1], start=1):
        ready = end / speed
        if ready > playback_start + emit_start + 1e-9:  # emit_start frames were played by then
            return index
    return None


def test_no_underrun_at_the_speed_each_geometry_needs():
    assert first_underrun(StreamingConfig(), speed=1.0) is None  # constant hops: real time suffices
    doubling = StreamingConfig(max_hop=96)
    assert first_underrun(doubling, speed=2.0) is None  # doubling hops: 2x real time (a GPU)
    assert first_underrun(doubling, speed=1.0) is not None  # ... which a CPU may not reach


def test_first_audio_after_first_window_codes():
    cfg = StreamingConfig()
    stream = CodecStream(cfg, HOP)
    for _ in range(cfg.first_window - 1):
        stream.push(5)
        assert stream.next_window() is None
    stream.push(5)
    window = stream.next_window()
    assert window is not None and (window.start, window.size, window.emit_end) == (
        0,
        cfg.first_window,
        cfg.first_window - cfg.lookahead,
    )
    assert stream.next_window() is None  # next window needs `hop` more codes


def test_misuse_is_refused():
    stream = CodecStream(StreamingConfig(first_window=4, window=10, hop=3, lookahead=2, crossfade=1), HOP)
    stream.push(range(20))
    w0, w1 = stream.next_window(), stream.next_window()
    with pytest.raises(ValueError, match="in order"):
        stream.take(w1, np.zeros(HOP * w1.size))
    with pytest.raises(ValueError, match="samples"):
        stream.take(w0, np.zeros(HOP * w0.size + 1))
    assert stream.next_window(final=True) is not None
    with pytest.raises(RuntimeError, match="final"):
        stream.push(1)
    for bad in [
        dict(crossfade=9, lookahead=8),
        dict(first_window=8, lookahead=8),
        dict(window=20),
        dict(hop=0),
        dict(max_hop=12),
        dict(max_hop=295),
    ]:
        with pytest.raises(ValueError):
            StreamingConfig(**bad)


def test_fade_is_complementary():
    ramp = fade_in(1280)
    np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-6)
    assert 0 < ramp[0] < 0.001 and ramp[-1] > 0.999


# ---- with the fixture model ---------------------------------------------------------------------


def test_stream_is_close_to_full_decode(codec):
    codes = torch.randint(0, codec.codebook_size, (1500,), generator=torch.Generator().manual_seed(0))  # 20 s
    full = codec.decode(codes[None])[0].numpy()
    out = codec.decode_streaming(codes)
    assert out.shape == (HOP * 1500,)
    snr = 10 * np.log10((full**2).sum() / ((out - full) ** 2).sum())
    assert snr >= FIXTURE_MIN_SNR_DB, snr
    assert np.abs(out - full).max() <= FIXTURE_MAX_ABS
    assert np.isfinite(out).all()


def test_short_utterance_equals_full_decode(codec):
    codes = torch.randint(0, codec.codebook_size, (17,), generator=torch.Generator().manual_seed(1))
    full = codec.decode(codes[None])[0].numpy()
    for push in (1, 17):  # produced slowly (windows start at first_window) or all at once
        out = codec.decode_streaming(codes, push=push)
        assert out.shape == full.shape
        np.testing.assert_allclose(out, full, atol=1e-6, rtol=0)


def test_batched_windows_equal_windows_one_by_one(codec):
    cfg = StreamingConfig(first_window=12, window=40, hop=8, lookahead=4, crossfade=2)
    gen = torch.Generator().manual_seed(2)
    lengths = [130, 95, 7, 130]
    utterances = [torch.randint(0, codec.codebook_size, (n,), generator=gen) for n in lengths]
    streams = [codec.new_stream(cfg) for _ in utterances]
    outputs: list[list[np.ndarray]] = [[] for _ in utterances]
    batched_calls = 0
    for t in range(max(lengths) + 1):
        ready = []
        for i, (stream, codes) in enumerate(zip(streams, utterances)):
            if stream.finished:
                continue
            if t < len(codes):
                stream.push(codes[t])
            while (window := stream.next_window(final=t >= len(codes))) is not None:
                ready.append((i, window))
        if not ready:
            continue
        audio = codec.decode_windows([w for _, w in ready])
        batched_calls += len({w.size for _, w in ready}) < len(ready)
        for (i, window), batch_audio in zip(ready, audio):
            alone = codec.decode(window.codes[None])[0]
            torch.testing.assert_close(batch_audio, alone, atol=2e-6, rtol=0)
            outputs[i].append(streams[i].take(window, batch_audio))
    assert batched_calls > 5  # equal-size windows of different streams really were batched
    for codes, pieces in zip(utterances, outputs):
        assert sum(len(p) for p in pieces) == HOP * len(codes)
    # the two streams with identical lengths but different codes give different audio
    assert not np.allclose(np.concatenate(outputs[0]), np.concatenate(outputs[3]))


@pytest.mark.parametrize("config", [StreamingConfig(), StreamingConfig(max_hop=144)], ids=["constant", "doubling"])
def test_every_window_but_the_last_has_a_grid_size(config):
    """The engine captures codec CUDA graphs for these sizes only; any other non-final size
    would fall back to a slow eager decode in the steady state."""
    sizes = config.grid_sizes()
    assert sizes[-1] == config.window and list(sizes) == sorted(set(sizes))
    if config.max_hop == 144:
        assert sizes == (36, 60, 108, 204, 300)
    seen = set()
    for n in (37, 59, 61, 200, 301, 700, 1234):
        spans = stream_schedule(n, config)
        seen.update(end - start for start, end, _, _ in spans[:-1])
    assert seen <= set(sizes) and seen == set(sizes)


@pytest.mark.parametrize("push", [1, 16, 10_000])
def test_last_windows_take_a_captured_size(push):
    """With the GPU geometry every window of every utterance of at least first_window codes,
    the last one included, has one of the sizes the engine captures CUDA graphs for (no eager
    decode when a row ends), giving up fewer than final_step frames of left context; without
    final_step most last windows have odd sizes."""
    from wyoming_lina.engine import streaming_config_for

    config = streaming_config_for("cuda")
    assert config.final_step == 12 and not streaming_config_for("cpu").final_step
    grid, final = set(config.grid_sizes()), set(config.final_sizes())
    assert grid < final and len(final) == 23  # 36, 48, ..., 300
    odd = 0
    for n in range(config.first_window, 700):
        codes = torch.arange(n) % 50 + 1
        _, windows = run(codes, config, push)
        assert {w.size for w in windows[:-1]} <= grid and windows[-1].size in final, (n, [w.size for w in windows])
        assert windows[-1].start - max(0, n - config.window) < config.final_step
        _, plain = run(codes, StreamingConfig(max_hop=144), push)
        odd += plain[-1].size not in final
    assert odd > 200
    _, windows = run(torch.arange(20) + 1, config, push)  # shorter than the first window: exact
    assert [w.size for w in windows] == [20]


def test_captured_last_window_stays_close_to_full_decode(codec):
    """Less left context for the last window must not cost much: against a full decode the
    GPU geometry's stream loses little SNR to one with the exact last window (fixture, fixed
    seeds: at most 0.8 dB, 0.2 dB on average; the window grid alone, without sizes every 12
    frames, drops to 24.4 dB at 100 frames)."""
    losses = []
    for n in (40, 50, 75, 100, 150, 200, 260, 420):
        codes = torch.randint(0, codec.codebook_size, (n,), generator=torch.Generator().manual_seed(n))
        full = codec.decode(codes[None])[0].numpy()
        snr = {}
        for step in (0, 12):
            out = codec.decode_streaming(codes, StreamingConfig(max_hop=144, final_step=step))
            assert out.shape == full.shape
            snr[step] = 10 * np.log10((full**2).sum() / ((out - full) ** 2).sum())
        losses.append(snr[0] - snr[12])
        assert snr[12] >= 25.0, (n, snr)
    assert max(losses) <= 2.0 and np.mean(losses) <= 0.3, losses
