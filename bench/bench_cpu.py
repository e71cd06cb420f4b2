"""CPU speed of the pieces of a request, float32 against the quantized ONNX step (docs/cpu.md).

    python bench/bench_cpu.py --threads 2                      # everything below
    python bench/bench_cpu.py --threads 2 --only step --only codec
    python bench/bench_cpu.py --only agreement --seeds 6       # quality, any load

Full-size models with random weights (bench/full_size.py, bench/codec_models.py). Sections:
``step`` (decode step latency: float32 ``LinaModel.step`` as the engine runs it today, float32
with fused projections, ``OnnxStep``; 1 and 2 rows), ``text`` (text encoder, a 12-word
sentence), ``gla`` (the GLA recurrence alone over 375 frames: the per-frame loop against the
chunked form, per chunk size), ``prefill`` (a 5 s voice prompt: the per-voice encoder pass and the
per-request rest; with the per-frame loop too, before/after the chunked recurrence), ``codec``
(one decode per window size), ``streaming`` (time to first audio, real-time
factor and the smallest playback margin of several StreamingConfigs, simulated from the
measured step and codec times), ``agreement`` (the quantized step and bf16 weights against float32).

Timings interleave the candidates round by round and report the median round (and the
fastest and slowest): the machine is shared, and a 2-thread OpenMP op stalls whenever another
process holds a core, so the load average is printed with every section; re-run when it is low.
End to end through the Wyoming server (time to first audio and real-time factor, state and
prompt voice, 1 and 2 clients): ``bench/bench_server.py --device cpu --fixtures ../shared/fixtures
--loads 1,2 --rounds 2 --min-requests 4 --voice state|prompt --threads 2`` (the real server as its
own process; docs/cpu.md).
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from codec_models import random_codec  # noqa: E402
from full_size import random_full_size_lina  # noqa: E402

from wyoming_lina.codec.streaming import StreamingConfig, stream_schedule  # noqa: E402
from wyoming_lina.engine.cpu_speed import simulate_stream  # noqa: E402
from wyoming_lina.model import cast_weights  # noqa: E402
from wyoming_lina.model.cpu_step import OnnxStep  # noqa: E402
from wyoming_lina.model.kernels import chunked_gla, naive_gla  # noqa: E402

FRAME_MS = 1000 / 75
SENTENCE = "The kitchen lights are off, and the front door is locked for the night."  # 12 words
PROMPT_FRAMES = 375  # a 5 s voice prompt


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def rounds(candidates: dict[str, Callable[[], None]], reps: int, per_round: int) -> dict[str, list[float]]:
    """ms per call of each candidate: the median call of each round, rounds interleaved."""
    for fn in candidates.values():
        fn()
    out: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(reps):
        for name, fn in candidates.items():
            times = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            out[name].append(1000 * statistics.median(times))
    return out


def summary(ms: list[float]) -> str:
    s = sorted(ms)
    return f"{statistics.median(s):8.2f} ms (fastest round {s[0]:.2f}, slowest {s[-1]:.2f})"


def stepper(step, ctx, state, token):
    """A closure running one decode step, feeding back its argmax (state advances)."""
    box = {"state": state, "token": token}

    def run():
        logits, box["state"] = step(ctx, box["token"], box["state"])
        box["token"] = logits.argmax(-1)

    return run


@torch.inference_mode()
def bench_step(model, quantized, args) -> dict[str, tuple[float, float]]:
    """(median round, fastest round) in ms per step, per candidate."""
    print(f"\n## decode step ({load()})", flush=True)
    fused = copy.deepcopy(model).fuse_projections()
    text = torch.randint(3, model.config.text_vocab, (1, 70), generator=torch.Generator().manual_seed(0))
    medians = {}
    for rows in (1, 2):
        ctx = model.encode_text(text.expand(rows, -1))
        token = torch.ones(rows, dtype=torch.long)
        cands = {
            f"float32 LinaModel.step, {rows} row(s)": stepper(model.step, ctx, model.init_state(rows), token),
            f"float32 fused projections, {rows} row(s)": stepper(fused.step, ctx, model.init_state(rows), token),
            f"OnnxStep, {rows} row(s)": stepper(quantized.step, ctx, model.init_state(rows), token),
        }
        for name, ms in rounds(cands, args.reps, args.steps).items():
            print(f"{name:42s} {summary(ms)}", flush=True)
            medians[name] = (statistics.median(ms), min(ms))
    print(load())
    return medians


@torch.inference_mode()
def bench_text(model, args) -> float:
    from wyoming_lina.text import LinaTokenizer, prepare_sentence

    tokenizer = LinaTokenizer(Path(args.fixtures) / "lina-tiny" / "bpe256.json")
    ids = torch.tensor([tokenizer.encode(" ".join(prepare_sentence(SENTENCE)))])
    print(f"\n## text encoder, 12 words = {ids.shape[1]} tokens ({load()})", flush=True)
    ms = rounds({"encode_text": lambda: model.encode_text(ids)}, args.reps, 3)["encode_text"]
    print(f"{'encode_text':42s} {summary(ms)}")
    return statistics.median(ms)


@torch.inference_mode()
def bench_gla(model, args) -> None:
    """One layer's recurrence over a 5 s prompt, batch 1, the model's head sizes; decays as the
    random model's gate (logsigmoid of bias + noise, / 16)."""
    cfg = model.config.gla
    print(f"\n## GLA recurrence, {PROMPT_FRAMES} frames, {cfg.heads} heads {cfg.head_k}x{cfg.head_v} ({load()})")
    gen = torch.Generator().manual_seed(2)
    shape = (1, PROMPT_FRAMES, cfg.heads, cfg.head_k)
    q, k = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen) / cfg.head_k**0.5
    v = torch.randn(1, PROMPT_FRAMES, cfg.heads, cfg.head_v, generator=gen)
    gate = torch.empty(shape).uniform_(-2, 4, generator=gen) + torch.randn(shape, generator=gen)
    g = torch.nn.functional.logsigmoid(gate) / 16
    s0 = torch.zeros(1, cfg.heads, cfg.head_k, cfg.head_v)
    cands = {"naive_gla (per-frame loop)": lambda: naive_gla(q, k, v, g, s0, 0.125)}
    for chunk in (16, 32, 64):
        cands[f"chunked_gla, chunks of {chunk}"] = functools.partial(chunked_gla, q, k, v, g, s0, 0.125, chunk)
    for name, ms in rounds(cands, args.reps, 5).items():
        print(f"{name:42s} {summary(ms)}")


def with_recurrence(model, recurrence, fn):
    """``fn`` with every GLA layer running ``recurrence`` over sequences, then the default again."""

    def run():
        model.use_recurrence(recurrence)
        try:
            return fn()
        finally:
            model.use_recurrence()

    return run


@torch.inference_mode()
def bench_prefill(model, args) -> dict[str, float]:
    print(f"\n## prefill of a 5 s prompt, {PROMPT_FRAMES} frames, float32 ({load()})", flush=True)
    g = torch.Generator().manual_seed(1)
    audio = torch.randint(3, model.config.out_vocab, (1, PROMPT_FRAMES), generator=g)
    ctx = model.encode_text(torch.randint(3, model.config.text_vocab, (1, 70), generator=g))
    encoded, state = model.encode_audio(audio, model.init_state(1))
    encode = functools.partial(model.encode_audio, audio, model.init_state(1))
    prefill = functools.partial(model.prefill_from_encoded, ctx, encoded, state)
    cands = {
        "encode_audio (once per voice, cached)": encode,
        "prefill_from_encoded (every request)": prefill,
        "encode_audio, per-frame GLA loop": with_recurrence(model, naive_gla, encode),
        "prefill_from_encoded, per-frame GLA loop": with_recurrence(model, naive_gla, prefill),
    }
    out = {}
    for name, ms in rounds(cands, max(3, args.reps // 3), 1).items():
        print(f"{name:42s} {summary(ms)}")
        out[name] = statistics.median(ms)
    return out


CODEC_SIZES = (24, 36, 48, 60, 72, 96, 120, 150, 192, 225, 300)


@torch.inference_mode()
def bench_codec(args) -> dict[int, float]:
    print(f"\n## codec decode, full-size random WavTokenizer, float32 ({load()})", flush=True)
    codec = random_codec()
    codec.backbone.fold_layer_scales()  # as the engine's StreamingDecoder does
    codec.backbone.cache_conv_weights()
    codes = torch.randint(
        0, codec.config.codebook_size, (1, max(CODEC_SIZES)), generator=torch.Generator().manual_seed(2)
    )
    cands = {n: (lambda n=n: codec.decode(codes[:, :n], check=False)) for n in CODEC_SIZES}
    out = {}
    for n, ms in rounds(cands, max(3, args.reps // 2), 3).items():
        out[n] = statistics.median(ms)
        print(f"window {n:3d} frames {summary(ms)}  = {out[n] / n:.2f} ms per decoded frame")
    return out


def decode_ms(table: dict[int, float], size: int) -> float:
    """Linear interpolation in the measured codec table."""
    sizes = sorted(table)
    lo = max([s for s in sizes if s <= size], default=sizes[0])
    hi = min([s for s in sizes if s >= size], default=sizes[-1])
    if hi == lo:
        return table[lo] * size / lo
    return table[lo] + (table[hi] - table[lo]) * (size - lo) / (hi - lo)


def simulate(config: StreamingConfig, frames: int, step_ms: float, codec: dict[int, float], start_ms: float):
    """One stream on the CPU engine, as the server's rule simulates it (``simulate_stream``), with
    the codec's time interpolated in the measured table: (time to first audio, real-time factor,
    smallest margin before playback needs a window; negative = an underrun)."""
    return simulate_stream(config, frames, step_ms, lambda size: decode_ms(codec, size), start_ms)


STREAMING_CANDIDATES = {
    "default (engine today)": StreamingConfig(),
    "low cost (docs/codec.md)": StreamingConfig(first_window=56, window=225, hop=48, lookahead=8),
    "hops 24 -> 48": StreamingConfig(max_hop=48),
    "hops 24 -> 96": StreamingConfig(max_hop=96),
    "first 24, hops 12 -> 96": StreamingConfig(first_window=24, hop=12, lookahead=8, max_hop=96),
    "first 24, hops 16 -> 96, window 225": StreamingConfig(
        first_window=24, hop=16, lookahead=8, window=225, max_hop=96
    ),
    "first 36, hops 24 -> 96, window 225": StreamingConfig(window=225, max_hop=96),
    "hops 24 -> 144 (the GPU's)": StreamingConfig(max_hop=144),
    "first 24, hops 16 -> 144": StreamingConfig(first_window=24, hop=16, lookahead=8, max_hop=144),
}


def bench_streaming(
    steps: dict[str, float], codec: dict[int, float], text_ms: float, prefill_ms: float, frames: int
) -> None:
    """Every candidate StreamingConfig at every step time (measured, and assumed ones for a
    faster step): the codec decodes inside the CPU engine's loop, so it slows generation."""
    print(
        f"\n## streaming on the CPU, simulated from the numbers above ({frames} frames = {frames * FRAME_MS / 1000:.1f} s; "
        "text encoding, and the prompt prefill for a prompt voice, come first; + 0.2 ms sampling per step)"
    )
    print(
        "| step | config | first / window / hop -> max / lookahead | decoded per emitted frame | first audio, state voice | "
        "first audio, 5 s prompt voice | real-time factor | smallest margin (< 0: underrun) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, ms in steps.items():
        for name, cfg in STREAMING_CANDIDATES.items():
            cost = sum(e - s for s, e, _, _ in stream_schedule(frames, cfg)) / frames
            first_state, rtf, margin = simulate(cfg, frames, ms + 0.2, codec, text_ms)
            first_prompt, _, _ = simulate(cfg, frames, ms + 0.2, codec, text_ms + prefill_ms)
            geometry = f"{cfg.first_window} / {cfg.window} / {cfg.hop} -> {cfg.largest_hop} / {cfg.lookahead}"
            print(
                f"| {label} | {name} | {geometry} | {cost:.1f} | {first_state:.0f} ms | "
                f"{first_prompt:.0f} ms | {rtf:.2f} | {margin:.0f} ms |"
            )
    print(
        "\nLowest real-time factor without an underrun (60, 270 and 750 frames, >= 50 ms margin), first audio <= 800 ms:"
    )
    for label, ms in steps.items():
        found = best_streaming(ms, codec, text_ms)
        if found is None:
            print(f"- {label}: none (the step is slower than real time once the codec's share is added)")
            continue
        _, cfg, runs = found
        print(
            f"- {label}: first_window={cfg.first_window}, window={cfg.window}, hop={cfg.hop}, max_hop={cfg.max_hop}, "
            f"lookahead={cfg.lookahead}: first audio {runs[1][0]:.0f} ms (state voice), real-time factor "
            + ", ".join(f"{rtf:.2f}" for _, rtf, _ in runs)
            + ", margin "
            + ", ".join(f"{m:.0f}" for _, _, m in runs)
            + " ms"
        )


def best_streaming(
    step_ms: float,
    codec: dict[int, float],
    text_ms: float,
    lengths=(60, 270, 750),
    safety_ms: float = 50,
    max_first_audio_ms: float = 800,
):
    """The StreamingConfig with the lowest real-time factor that never underruns (margin >=
    safety_ms for every utterance length) and gives the first audio of a state voice within
    max_first_audio_ms, among geometries docs/codec.md found transparent enough (window >= 150,
    lookahead >= 8, crossfade 2); ties go to the earlier first audio. None if no geometry keeps
    up (the step is slower than real time once the codec's share is added)."""
    best = None
    for first in (24, 30, 36, 48, 56, 72):
        for hop in (12, 16, 24, 32, 48, 72):
            for max_hop in (None, 48, 96, 144):
                for window in (150, 225, 300):
                    for lookahead in (8, 12):
                        try:
                            cfg = StreamingConfig(
                                first_window=first, window=window, hop=hop, lookahead=lookahead, max_hop=max_hop
                            )
                        except ValueError:
                            continue
                        runs = [simulate(cfg, n, step_ms + 0.2, codec, text_ms) for n in lengths]
                        if min(margin for _, _, margin in runs) < safety_ms or runs[1][0] > max_first_audio_ms:
                            continue
                        key = (round(max(rtf for _, rtf, _ in runs), 2), runs[1][0])
                        if best is None or key < best[0]:
                            best = (key, cfg, runs)
    return best


@torch.inference_mode()
def bench_agreement(model, quantized, args) -> None:
    """Teacher-forced logits against float32 (same tokens for all), then free-running greedy
    decoding from the same start: how many steps until the first different token."""
    print(f"\n## agreement with float32 ({args.seeds} seeds x {args.agreement_steps} teacher-forced steps)", flush=True)
    bf16 = cast_weights(copy.deepcopy(model), torch.bfloat16)
    candidates = {
        "OnnxStep (8-bit, Hadamard)": (quantized.step, model),
        "bf16 weights (the GPU's serving dtype)": (bf16.step, bf16),
    }
    results = {name: [] for name in candidates}
    for seed in range(args.seeds):
        g = torch.Generator().manual_seed(100 + seed)
        text = torch.randint(3, model.config.text_vocab, (1, 40 + 10 * seed), generator=g)
        tokens = torch.randint(3, model.config.out_vocab, (args.agreement_steps,), generator=g)
        ref = teacher_forced(model.step, model.encode_text(text), model.init_state(1), tokens)
        ref_free = free_running(model.step, model.encode_text(text), model.init_state(1), args.agreement_steps)
        for name, (step, owner) in candidates.items():
            ctx = owner.encode_text(text)
            got = teacher_forced(step, ctx, model.init_state(1), tokens)
            top1 = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
            rel = (got - ref).norm(dim=-1) / ref.norm(dim=-1)
            kl = torch.sum(ref.softmax(-1) * (ref.log_softmax(-1) - got.log_softmax(-1)), -1)
            free = free_running(step, ctx, model.init_state(1), args.agreement_steps)
            diff = (free != ref_free).nonzero()
            first_diff = int(diff[0]) if len(diff) else args.agreement_steps
            results[name].append((top1, rel.median().item(), rel.quantile(0.9).item(), kl.median().item(), first_diff))
    print(
        "| step | top-1 agreement mean (min) | relative logits error, median (p90) | KL median (nats) | free-running: steps until the first different token, median (min) |"
    )
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        col = list(zip(*rows))
        print(
            f"| {name} | {statistics.mean(col[0]):.3f} ({min(col[0]):.3f}) | {statistics.mean(col[1]):.4f} "
            f"({statistics.mean(col[2]):.4f}) | {statistics.mean(col[3]):.4f} | {statistics.median(col[4]):.0f} ({min(col[4])}) |"
        )


def teacher_forced(step, ctx, state, tokens) -> torch.Tensor:
    out, token = [], torch.ones(1, dtype=torch.long)
    for t in range(tokens.shape[0]):
        logits, state = step(ctx, token, state)
        out.append(logits[0].float())
        token = tokens[t : t + 1]
    return torch.stack(out)


def free_running(step, ctx, state, steps: int) -> torch.Tensor:
    out, token = [], torch.ones(1, dtype=torch.long)
    for _ in range(steps):
        logits, state = step(ctx, token, state)
        token = logits.argmax(-1)
        out.append(int(token))
    return torch.tensor(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fixtures", default=str(HERE.parent.parent / "shared/fixtures"))
    parser.add_argument(
        "--only", action="append", choices=["step", "text", "gla", "prefill", "codec", "streaming", "agreement"]
    )
    parser.add_argument("--reps", type=int, default=9, help="interleaved rounds per timing")
    parser.add_argument("--steps", type=int, default=20, help="decode steps per round")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--agreement-steps", type=int, default=120)
    parser.add_argument(
        "--frames",
        type=int,
        default=270,
        help="utterance length for the streaming simulation (270 = 3.6 s, a 12-word sentence)",
    )
    parser.add_argument(
        "--assume-step-ms", type=float, action="append", default=[], help="also simulate streaming at this step time"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    only = set(args.only or ["step", "text", "gla", "prefill", "codec", "streaming", "agreement"])
    if "streaming" in only:
        only |= {"step", "text", "prefill", "codec"}
    print(f"# bench_cpu: torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, {load()}")
    model = random_full_size_lina(manifest=Path(args.fixtures) / "lina-tiny/full-size-keys.json")
    t0 = time.perf_counter()
    quantized = OnnxStep(model)
    print(
        f"OnnxStep built (export, quantize, session) in {time.perf_counter() - t0:.1f} s; its graph holds "
        f"{quantized.graph_bytes / 1e6:.0f} MB (float32: {sum(p.numel() for p in model.parameters()) * 4 / 1e6:.0f} MB "
        "of parameters)"
    )
    step_ms = bench_step(model, quantized, args) if "step" in only else {}
    text_ms = bench_text(model, args) if "text" in only else 0.0
    if "gla" in only:
        bench_gla(model, args)
    prefill = bench_prefill(model, args) if "prefill" in only else {}
    codec = bench_codec(args) if "codec" in only else {}
    if "streaming" in only:
        measured = step_ms["OnnxStep, 1 row(s)"][1]
        steps = {f"OnnxStep as measured (fastest round) {measured:.1f} ms": measured}
        steps |= {f"assumed {ms:.0f} ms": ms for ms in args.assume_step_ms}
        bench_streaming(steps, codec, text_ms, prefill["prefill_from_encoded (every request)"], args.frames)
    if "agreement" in only:
        bench_agreement(model, quantized, args)


if __name__ == "__main__":
    main()
