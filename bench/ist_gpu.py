"""Initial-state tuning on CUDA: are the gradients right, and how fast is it?

Run on a CUDA machine with fla-core installed, from the repository root:

    python bench/ist_gpu.py                      # fp32 weights
    python bench/ist_gpu.py --dtype bfloat16     # bf16 weights (state and loss stay fp32)
    python bench/ist_gpu.py --quick --device cpu # a smoke run anywhere (small, slow path)

1. Gradient check: the loss and d(loss)/d(speaker-state parameters) through the FLA kernels
   (chunk_gla for the teacher-forced pass) against the plain PyTorch recurrence on the same
   device (kernel "naive"), for the tiny upstream fixture model and the full-size random model.
2. Throughput: ``tune_state`` (the real training loop: padding, batching by length, gradient
   accumulation, Adam) on the full-size random model (bench/full_size.py) with random codes
   in 0..4095 and random text ids; prints steps/s, clips/s, seconds of audio trained per
   second and peak memory, after a warm-up run (Triton compiles its kernels then).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from full_size import random_full_size_lina  # noqa: E402

from wyoming_lina.model import BOS, SpeakerState, cast_weights, load_lina  # noqa: E402
from wyoming_lina.model.kernels import choose_gla_kernel, fla_available, gla, naive_gla  # noqa: E402
from wyoming_lina.voices.batches import collate  # noqa: E402
from wyoming_lina.voices.dataset import TuningExample  # noqa: E402
from wyoming_lina.voices.training import TuningConfig, tune_state  # noqa: E402

FRAMES_PER_SECOND = 75
TEXT_TOKENS_PER_SECOND = 12  # roughly what the BPE tokenizer gives for English speech


def random_examples(n: int, seconds: float, n_codes: int, seed: int = 0) -> list[TuningExample]:
    """Clips of seconds * (0.6 .. 1.4) with random codes and a text of matching length."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = max(8, int(seconds * rng.uniform(0.6, 1.4) * FRAMES_PER_SECOND))
        n_text = max(4, int(length / FRAMES_PER_SECOND * TEXT_TOKENS_PER_SECOND))
        text = [BOS] + [rng.randrange(3, 256) for _ in range(n_text)] + [2]
        codes = torch.tensor([rng.randrange(n_codes) for _ in range(length)])
        out.append(TuningExample(f"clip{i}", text, codes))
    return out


def loss_and_grads(model, state: SpeakerState, examples, recurrence):
    """Teacher-forced loss (upstream's) with the given GLA recurrence, and the state's gradients."""
    model.use_recurrence(recurrence)
    state.zero_grad(set_to_none=True)
    text, mask, audio, targets = collate(examples, model.device)
    ctx = model.encode_text(text, mask)
    logits, _ = model.forward_audio(ctx, audio, model.init_state(len(examples), state.initial_state()))
    model.use_recurrence()
    loss = F.cross_entropy(logits.transpose(1, 2).float(), targets, ignore_index=BOS)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in state.named_parameters()}


def gradient_check(name: str, model, examples, rows: list[str]) -> None:
    gen = torch.Generator().manual_seed(7)
    state = SpeakerState(model.config, generator=gen)
    with torch.no_grad():  # a state large enough to matter (upstream's init is nearly zero)
        for p in state.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    state = state.to(model.device)
    fast_kernel = choose_gla_kernel(model.device.type, 2, fla_available=fla_available())
    ref_loss, ref = loss_and_grads(model, state, examples, naive_gla)
    loss, got = loss_and_grads(model, state, examples, gla)
    worst = max((got[k] - ref[k]).abs().max().item() / max(ref[k].abs().max().item(), 1e-12) for k in ref)
    cos = min(F.cosine_similarity(got[k].flatten(), ref[k].flatten(), dim=0).item() for k in ref)
    rows.append(f"| {name} | {fast_kernel} vs naive | {abs(loss - ref_loss).item():.2e} | {worst:.2e} | {cos:.6f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--quick", action="store_true", help="tiny run (CPU smoke test)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0, help="mean clip length")
    parser.add_argument("--grad-seconds", type=float, default=4.0, help="clip length for the gradient check")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--fixtures", default=str(Path(__file__).resolve().parent.parent.parent / "shared/fixtures"))
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.clips, args.seconds, args.batch_size, args.grad_accum = 2, 1, 2, 0.5, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    print(f"torch {torch.__version__}, device {device}", end="")
    if device.type == "cuda":
        print(f" ({torch.cuda.get_device_name(device)}), fla available: {fla_available()}", end="")
    print(f", weights {args.dtype}")

    # 1. gradients through the kernels
    rows = [
        "| model | kernel | abs loss diff | max grad diff / max grad | min cosine |",
        "|---|---|---|---|---|",
    ]
    tiny = Path(args.fixtures) / "lina-tiny" / "model.ckpt"
    if tiny.is_file():
        model = load_lina(tiny, device=device)
        gradient_check("tiny fp32", model, random_examples(3, 2.0, model.config.n_codes, seed=1), rows)
        del model
    else:
        print(f"(no fixture at {tiny}: tiny gradient check skipped)")
    model = random_full_size_lina(device)
    grad_seconds = 0.3 if args.quick else args.grad_seconds
    gradient_check("full fp32", model, random_examples(2, grad_seconds, model.config.n_codes, seed=2), rows)
    if dtype != torch.float32:
        cast_weights(model, dtype)
        gradient_check(
            f"full {args.dtype}", model, random_examples(2, grad_seconds, model.config.n_codes, seed=2), rows
        )
    print("\n".join(rows))

    # 2. throughput of the real loop
    examples = random_examples(args.clips, args.seconds, model.config.n_codes)
    config = TuningConfig(
        max_steps=args.warmup, batch_size=args.batch_size, grad_accum=args.grad_accum, eval_every=10**9, patience=0
    )
    tune_state(model, examples, [], config, progress=False)  # warm-up: kernel compilation, allocator
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = tune_state(
        model, examples, [], TuningConfig(**{**config.__dict__, "max_steps": args.steps}), progress=False
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    mean_frames = sum(e.frames for e in examples) / len(examples)
    audio_seconds = result.clips_seen * mean_frames / FRAMES_PER_SECOND
    print(
        f"\nfull-size random model, {args.clips} clips of ~{args.seconds:g} s, batch {args.batch_size} x "
        f"accumulation {args.grad_accum}:"
    )
    rates = f"{result.step / seconds:.2f} steps/s, {result.clips_seen / seconds:.1f} clips/s"
    print(f"  {rates}, {audio_seconds / seconds:.1f} s of audio per s")
    if device.type == "cuda":
        print(f"  peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    minutes_per_epoch_of_10_min = 600 / max(audio_seconds / seconds, 1e-9) / 60
    print(f"  one pass over 10 minutes of speech: {minutes_per_epoch_of_10_min:.1f} min")


if __name__ == "__main__":
    main()
