"""Does the CUDA path (FLA kernels, bf16 weights) compute what the CPU path computes?

Run on a CUDA machine with fla-core installed:
    python bench/gpu_check_model.py --fixtures ../shared/fixtures
Prints a markdown table of max |difference| between CPU float32 and CUDA (float32 and bf16)
for the parallel pass (chunk kernel) and the step pass (fused recurrent kernel), on the tiny
upstream fixture model and on a full-size random model.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from full_size import random_full_size_lina  # noqa: E402

from wyoming_lina.model import BOS, cast_weights, load_lina  # noqa: E402
from wyoming_lina.model.kernels import fla_available  # noqa: E402


def run(model, text, audio, n_steps, in_place=False):
    ctx = model.encode_text(text)
    par, par_state = model.forward_audio(ctx, audio, model.init_state(audio.shape[0]))
    state = model.init_state(audio.shape[0])
    steps = []
    for t in range(n_steps):
        if in_place:  # the served step: each GLA layer's state updated in place by one kernel
            logits = model.step_in_place(ctx, audio[:, t], state)
        else:
            logits, state = model.step(ctx, audio[:, t], state)
        steps.append(logits)
    return par, torch.stack(steps, 1), par_state.layers[0].S, state.layers[0].S


def compare(name, cpu_model, gpu_model, text, audio, n_steps, rows):
    ref = [t.float().cpu() for t in run(cpu_model, text, audio, n_steps)]
    got = [t.float().cpu() for t in run(gpu_model, text.cuda(), audio.cuda(), n_steps)]
    labels = [
        "parallel logits (chunk)",
        "step logits (fused recurrent)",
        "state S after parallel",
        "state S after steps",
    ]
    # the serving step: fused projections + the one-kernel GLA layer (model/triton_step.py)
    gpu_model.fuse_projections()
    fused = [t.float().cpu() for t in run(gpu_model, text.cuda(), audio.cuda(), n_steps, in_place=True)]
    ref, got = ref + ref[1::2], got + fused[1::2]
    labels += ["step logits (fused_step Triton)", "state S after fused_step"]
    for label, r, g in zip(labels, ref, got):
        diff = (r - g).abs().max().item()
        scale = r.abs().max().item()
        agree = ""
        if "logits" in label:
            agree = f"{(r.argmax(-1) == g.argmax(-1)).float().mean().item() * 100:.1f}%"
        rows.append(f"| {name} | {label} | {diff:.2e} | {diff / scale:.2e} | {agree} |")


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", default=str(Path(__file__).resolve().parent.parent.parent / "shared/fixtures"))
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs CUDA"
    print(f"torch {torch.__version__}, fla available: {fla_available()}, {torch.cuda.get_device_name()}")
    rows = ["| model | output | max abs diff | diff / max abs ref | top-1 agreement |", "|---|---|---|---|---|"]
    fixtures = Path(args.fixtures)
    tiny = load_lina(fixtures / "lina-tiny/model.ckpt")
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(3, 200, (2, 40), generator=gen)
    text[:, 0], text[:, -1] = 1, 2
    audio = torch.randint(3, tiny.config.out_vocab, (2, 300), generator=gen)
    audio[:, 0] = BOS
    compare("tiny fp32", tiny, copy.deepcopy(tiny).cuda(), text, audio, args.steps, rows)
    compare("tiny bf16", tiny, cast_weights(copy.deepcopy(tiny).cuda(), torch.bfloat16), text, audio, args.steps, rows)

    manifest = fixtures / "lina-tiny/full-size-keys.json"
    full = random_full_size_lina("cpu", manifest=manifest)
    audio = torch.randint(3, full.config.out_vocab, (2, 300), generator=gen)
    audio[:, 0] = BOS
    compare("full fp32", full, copy.deepcopy(full).cuda(), text, audio, args.steps, rows)
    compare("full bf16", full, cast_weights(copy.deepcopy(full).cuda(), torch.bfloat16), text, audio, args.steps, rows)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
