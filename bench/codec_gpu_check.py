"""Codec on an accelerator: does it compute the same as on CPU, and how fast does it decode?

    .venv/bin/python bench/codec_gpu_check.py                       # CUDA, full run (~1-2 min)
    .venv/bin/python bench/codec_gpu_check.py --device cpu --quick  # smoke test anywhere (~1-2 min)

Builds the fixture codec (upstream reference tensors) and a full-size codec with random
weights (config defaults; see bench/codec_models.py), each on CPU in float32 as the
reference and on ``--device`` with the backbone in float32 and in bfloat16 (head and
encoder always float32). Prints markdown tables:

1. accuracy: device decode vs CPU float32 decode (max abs, SNR dB), fixture codes and
   ``wav_out`` vs the upstream references, streaming decode vs the device's full decode;
2. speed: full decode at batch 1 (ms per second of audio), one steady streaming window at
   batch 1, and one batched call over the windows of ``--streams`` streams (how many times
   real time that call emits, given each window emits ``hop`` frames).

Needs only torch, numpy, pyyaml, soundfile, soxr, safetensors and the fixture folder.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codec_models import FIXTURE_DIR, fixture_codec, random_codec, token_streams  # noqa: E402

from wyoming_lina.codec import StreamingConfig  # noqa: E402
from wyoming_lina.codec.streaming import Window  # noqa: E402


def snr_db(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    noise = float((out - ref).square().sum())
    return float("inf") if noise == 0 else 10 * np.log10(float(ref.square().sum()) / noise)


def max_abs(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float().cpu() - ref.float().cpu()).abs().max())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_ms(fn, device: str, reps: int) -> float:
    fn()  # warm-up (kernel selection, allocator)
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="short audio, few streams and repetitions")
    parser.add_argument("--streams", type=int, default=None, help="streams batched in one window decode (default 64)")
    parser.add_argument("--seconds", type=float, default=None, help="utterance length (default 10 s)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 in cuDNN convs and matmuls (default: off)")
    args = parser.parse_args()
    # PyTorch allows TF32 in cuDNN convolutions by default, which puts "fp32" results far outside
    # the fixture tolerances; off by default here so fp32 means fp32.
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available; run with --device cpu")
    streams = args.streams or (2 if args.quick else 64)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    reps = 1 if args.quick else 10
    stream_cfg = StreamingConfig()
    frames = int(seconds * 75)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(
        f"torch {torch.__version__}, device {device} ({name}), TF32 {'on' if args.tf32 else 'off'}, streaming {stream_cfg}\n"
    )

    vec = load_file(str(FIXTURE_DIR / "vectors.safetensors"))
    acc_rows, speed_rows = [], []
    for model_name, cpu_codec in (("fixture", fixture_codec()), ("full-size random", random_codec())):
        codes = token_streams(frames, cpu_codec.codebook_size)["iid"]
        ref = cpu_codec.decode(codes[None])[0]
        for dtype in (torch.float32, torch.bfloat16):
            codec = copy.deepcopy(cpu_codec).to(device).set_backbone_dtype(dtype)
            dtype_name = str(dtype).replace("torch.", "")
            full = codec.decode(codes[None].to(device))[0].cpu()
            if device == "cpu" and dtype != torch.float32:
                stream_note = "not run"  # CPU bf16 is slow and not a deployment option
            else:
                stream = codec.decode_streaming(codes.to(device), stream_cfg)
                stream_note = f"{snr_db(torch.from_numpy(stream), full):.1f}"
            fixture_note = ""
            if model_name == "fixture":
                same_codes = all(
                    torch.equal(codec.encode(vec[f"wav_in{c}"].to(device)).cpu(), vec[f"codes{c}"][0])
                    for c in ("", "_b2", "_short")
                )
                wav_err = max_abs(codec.decode(vec["codes"][0].to(device)), vec["wav_out"])
                fixture_note = f"codes equal: {same_codes}; wav_out max abs {wav_err:.2e}"
            acc_rows.append(
                f"| {model_name} | {device} {dtype_name} | {max_abs(full, ref):.2e} | {snr_db(full, ref):.1f} | "
                f"{stream_note} | {fixture_note} |"
            )

            window_codes = codes[: stream_cfg.window].to(device)
            if device == "cpu" and dtype != torch.float32:
                # CPU bf16 convolutions are very slow and bf16 is a GPU option only: accuracy above, no timing
                speed_rows.append(f"| {model_name} | {device} {dtype_name} | not timed | | | |")
            else:
                batch = [Window(0, window_codes, 0, 0, stream_cfg.hop, False)] * streams
                full_ms = time_ms(lambda: codec.decode(codes[None].to(device)), device, reps)
                one_ms = time_ms(lambda: codec.decode(window_codes[None]), device, reps)
                batch_ms = time_ms(lambda: codec.decode_windows(batch), device, max(1, reps // 2))
                emitted_s = streams * stream_cfg.hop / 75
                speed_rows.append(
                    f"| {model_name} | {device} {dtype_name} | {full_ms:.1f} ({full_ms / seconds:.2f} ms per s) | "
                    f"{one_ms:.1f} | {streams} x {window_codes.shape[0]}: {batch_ms:.1f} | "
                    f"{emitted_s / (batch_ms / 1000):.1f}x |"
                )
            codec = None  # the next dtype's copy replaces it; free this one first
            if device.startswith("cuda"):
                torch.cuda.empty_cache()

    print("### Accuracy (reference: CPU float32 decode of the same codes)\n")
    print(
        f"| model | run | max abs vs CPU fp32 | SNR dB vs CPU fp32 | stream vs full SNR dB ({seconds:g} s) | fixture checks |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(acc_rows))
    print(f"\n### Speed (median of {reps}; utterance {seconds:g} s = {frames} frames)\n")
    print(
        f"| model | run | full decode batch 1, ms | one window (<= {stream_cfg.window} frames), ms | batched windows, ms | "
        f"real time emitted per batched call ({streams} x {stream_cfg.hop} frames) |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(speed_rows))


if __name__ == "__main__":
    main()
