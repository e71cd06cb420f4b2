"""How fast this CPU speaks, measured at start-up, and the streaming windows that suit it.

On a CPU the codec decodes inside the engine's loop, between steps, so a window geometry that
is right on a GPU (hops doubling to 144 frames: it needs generation at 2x real time) underruns
here, and one that decodes often costs generation speed. ``measure`` times the decode step and
the codec on this machine; ``choose_streaming`` simulates one stream for every geometry that
docs/codec.md found transparent and keeps the one with the lowest real-time factor that never
runs dry and gives the first audio of a state voice within 800 ms. The log line says plainly
whether this machine is faster than real time, and by how much.

With the quantized step (``--cpu-quant q8``) the codec's backbone is tried in bfloat16 too
(``choose_codec_dtype``): CPUs with AVX-512 BF16 or AMX decode 2-3x faster that way, 37.6 dB SNR
from float32 on the full-size random codec (docs/codec.md); CPUs without them emulate it slowly,
so it is kept only where it measured faster.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ..codec.streaming import StreamingConfig, stream_schedule
from ..defaults import FRAMES_PER_SECOND
from ..model import BOS
from .prefill import lower_precision

FRAME_MS = 1000.0 / FRAMES_PER_SECOND
SAMPLING_MS = 0.2  # per step, beside the model (sampling, bookkeeping)
SENTENCE_FRAMES = 270  # a typical 3.6 s sentence, for the reported real-time factor


@dataclass(frozen=True)
class CpuSpeed:
    threads: int
    step_ms: float  # one decode step for one row
    codec_call_ms: float  # a codec decode call, beside its frames
    codec_frame_ms: float  # per decoded frame
    text_ms: float  # text encoding of a sentence
    codec_dtype: str = "float32"  # the codec backbone's

    def decode_ms(self, frames: int) -> float:
        return self.codec_call_ms + self.codec_frame_ms * frames


def simulate(config: StreamingConfig, frames: int, speed: CpuSpeed, start_ms: float) -> tuple[float, float, float]:
    """One stream on the CPU engine at ``speed``: (first audio ms, real-time factor, smallest
    margin ms between a window's audio being ready and playback needing it; < 0 is an underrun)."""
    return simulate_stream(config, frames, speed.step_ms + SAMPLING_MS, speed.decode_ms, start_ms)


def simulate_stream(
    config: StreamingConfig, frames: int, step_ms: float, decode_ms: Callable[[int], float], start_ms: float
) -> tuple[float, float, float]:
    """``simulate`` with the step's time (sampling included) and the codec's time per window size
    given directly (bench/bench_cpu.py passes its measured table). The codec decodes inside the
    engine's loop, between steps, so its time delays generation as well as the audio."""
    now, produced, playback_end, first, margin = start_ms, 0, 0.0, None, float("inf")
    for start, end, emit_start, emit_end in stream_schedule(frames, config):
        if end > produced:
            now += (end - produced) * step_ms
            produced = end
        now += decode_ms(end - start)
        if first is None:
            first, playback_end = now, now
        else:
            margin = min(margin, playback_end - now)
            playback_end = max(playback_end, now)
        playback_end += (emit_end - emit_start) * FRAME_MS
    return first, (now - start_ms) / (frames * FRAME_MS), margin


def candidates():
    """The geometries tried: enough to span fast to slow machines (bench/bench_cpu.py searched a
    wider grid; these kept every winner it found), few enough to search in well under a second.
    First windows of 56 and 64 and a hop of 32 serve a step just under a frame (~12 ms on a
    2-core Xeon with the ONNX step): there a first window of 56 and a hop of 32 keep up with the
    first audio of a state voice at ~750 ms, where the coarser grid found nothing that keeps up
    and fell back to a first window of 72 (~950 ms, and pauses in long sentences)."""
    for first in (24, 36, 48, 56, 64, 72):
        for hop in (16, 24, 32, 48, 72):
            for max_hop in (None, 96, 144):
                for window in (150, 225):
                    try:
                        yield StreamingConfig(first_window=first, window=window, hop=hop, lookahead=8, max_hop=max_hop)
                    except ValueError:
                        continue


def choose_streaming(
    speed: CpuSpeed, lengths=(60, SENTENCE_FRAMES, 750), safety_ms: float = 50.0, max_first_audio_ms: float = 800.0
) -> tuple[StreamingConfig, bool]:
    """Among the geometries that never underrun (margin >= safety_ms for every utterance length)
    and give the first audio of a state voice within max_first_audio_ms: the earliest first audio
    among those within 0.05 of the lowest real-time factor (a fast machine gets its audio sooner,
    a slow one the fewest decodes). When none keeps up (the machine is slower than real time),
    the lowest real-time factor. Returns (config, whether it keeps up)."""
    kept, fallback = [], None
    for config in candidates():
        time.sleep(0)  # a search beside a serving engine: let the other threads have the interpreter
        runs = [simulate(config, n, speed, speed.text_ms) for n in lengths]
        rtf, first = max(r for _, r, _ in runs), runs[1][0]
        if fallback is None or (rtf, first) < fallback[0]:
            fallback = ((rtf, first), config)
        if min(m for _, _, m in runs) >= safety_ms and first <= max_first_audio_ms:
            kept.append((rtf, first, config))
    if not kept:
        return fallback[1], False
    lowest = min(rtf for rtf, _, _ in kept)
    near = [(first, rtf, config) for rtf, first, config in kept if rtf <= lowest + 0.05]
    return min(near, key=lambda k: k[:2])[2], True


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


@torch.inference_mode()
def measure(model, step, codec, steps: int = 24) -> CpuSpeed:
    """Time ``step`` (the engine's CPU step: ``model.step`` or the quantized one) for one row over
    a sentence-long text, two codec window sizes, and the text encoder (a few seconds)."""
    text = torch.full((1, 60), 40, dtype=torch.long)
    text[0, 0] = BOS
    ctx = model.encode_text(text)
    state, token = model.init_state(1), torch.tensor([BOS])

    def one_step() -> None:
        nonlocal state
        _, state = step(ctx, token, state)

    one_step()  # first-use costs
    step_ms = _median_ms(one_step, steps)
    call_ms, frame_ms = measure_codec(codec)
    text_ms = _median_ms(lambda: model.encode_text(text), 3)
    return CpuSpeed(torch.get_num_threads(), step_ms, call_ms, frame_ms, text_ms, _dtype_name(codec.backbone_dtype))


@torch.inference_mode()
def measure_codec(codec, small: int = 36, large: int = 150) -> tuple[float, float]:
    """(ms per decode call beside its frames, ms per frame), from two window sizes."""
    codes = torch.randint(0, codec.codebook_size, (1, large))
    codec.decode(codes[:, :small], check=False)  # first-use costs
    small_ms = _median_ms(lambda: codec.decode(codes[:, :small], check=False), 3)
    large_ms = _median_ms(lambda: codec.decode(codes[:, :large], check=False), 3)
    per_frame = max(0.0, (large_ms - small_ms) / (large - small))
    return max(0.0, small_ms - per_frame * small), per_frame


def choose_codec_dtype(codec, speed: CpuSpeed, min_gain: float = 0.2) -> CpuSpeed:
    """Run the codec's backbone in bfloat16 if that decodes a 150-frame window at least
    ``min_gain`` faster than ``speed`` measured (float32). A copy is timed, so a codec left in
    float32 is untouched. Returns the speed the codec now has."""
    if codec.backbone_dtype != torch.float32:
        return speed
    trial = copy.deepcopy(codec).set_backbone_dtype(torch.bfloat16)
    trial.backbone.cache_conv_weights()  # (the inference-time layout copies, in bfloat16)
    call_ms, frame_ms = measure_codec(trial)
    del trial
    tried = replace(speed, codec_call_ms=call_ms, codec_frame_ms=frame_ms, codec_dtype="bfloat16")
    if tried.decode_ms(150) > (1 - min_gain) * speed.decode_ms(150):
        return speed
    codec.set_backbone_dtype(torch.bfloat16)
    codec.backbone.cache_conv_weights()
    return tried


@torch.inference_mode()
def bf16_prompts_faster(model, frames: int = 75, min_gain: float = 0.2) -> bool:
    """Whether a prompt's encoder pass over ``frames`` frames (1 s) runs at least ``min_gain``
    faster with its products in bfloat16 (autocast, as ``engine/prefill.py`` runs prompts) than in
    float32 on this CPU. AVX-512 BF16 or AMX make it ~2.2x faster (a 2-core Xeon and a 2-core
    EPYC, docs/cpu.md); a CPU without them emulates bfloat16 and would be slower. ~0.35 s for the
    full-size model on 2 cores."""
    audio = torch.full((1, frames), BOS, dtype=torch.long)

    def encode(bf16: bool) -> Callable[[], None]:
        def run() -> None:
            with lower_precision(bf16):
                model.encode_audio(audio, model.init_state(1))

        return run

    encode(True)()  # first-use costs (bfloat16 weight copies, kernel choice)
    float32_ms, bf16_ms = _median_ms(encode(False), 3), _median_ms(encode(True), 3)
    return bf16_ms <= (1 - min_gain) * float32_ms


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def describe(speed: CpuSpeed, config: StreamingConfig, keeps_up: bool) -> str:
    """The start-up line: how fast, faster or slower than real time, and the windows chosen."""
    first, rtf, _ = simulate(config, SENTENCE_FRAMES, speed, speed.text_ms)
    if rtf < 0.995:
        verdict = f"faster than real time ({1 / rtf:.2f}x)"
    elif keeps_up:  # (the windows chosen never run dry, with nothing to spare)
        verdict = f"about as fast as real time ({rtf:.2f}x the audio's length)"
    else:
        verdict = f"SLOWER than real time ({rtf:.2f}x the audio's length)"
    pauses = "" if keeps_up else "; long sentences will pause while they are generated"
    return (
        f"CPU speed ({speed.threads} threads): a step takes {speed.step_ms:.1f} ms (a frame is {FRAME_MS:.1f} ms of speech), "
        f"the codec ({speed.codec_dtype}) {speed.codec_frame_ms:.2f} ms per frame: {verdict} for a {SENTENCE_FRAMES / FRAMES_PER_SECOND:.1f} s "
        f"sentence, first audio after about {first:.0f} ms{pauses}. Streaming windows: first {config.first_window}, "
        f"window {config.window}, hop {config.hop}{f' to {config.max_hop}' if config.max_hop else ''}, lookahead {config.lookahead}"
    )
