"""How far the windowed streaming decode is from a full decode, for several window settings.

    .venv/bin/python bench/codec_streaming.py                  # fixture + full-size random model
    .venv/bin/python bench/codec_streaming.py --model fixture  # seconds
    .venv/bin/python bench/codec_streaming.py --quick          # fewer settings, shorter streams
    .venv/bin/python bench/codec_streaming.py --last-window    # short utterances: exact vs grid-sized last window
    .venv/bin/python bench/codec_streaming.py --model real --config medium.yaml \
        --checkpoint wavtokenizer.ckpt --wav speech.wav            # the trained codec, real speech

For each setting and token stream (i.i.d. random tokens; "bursty": random runs separated by
held-token pauses) it streams the codes one by one through ``CodecStream`` and compares the
concatenated audio with ``decode`` of the whole sequence: SNR (dB), max |difference|, SNR
of the first emitted chunk, the worst SNR over 1/3-s segments, and the largest step of the
error between neighbouring samples at window seams versus elsewhere (a click shows up as a
seam step well above the rest). Latency columns: codes needed
before the first audio (ms of audio time) and lookahead (ms). ``cost`` = frames decoded per
frame emitted. Prints a markdown table (used in docs/codec.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codec_models import fixture_codec, random_codec, token_streams  # noqa: E402

from wyoming_lina.codec import StreamingConfig, load_codec, read_audio  # noqa: E402
from wyoming_lina.codec.streaming import decode_cost, stream_schedule  # noqa: E402

S = StreamingConfig  # S(first_window, window, hop, lookahead, crossfade)
SETTINGS = {
    "default": StreamingConfig(),
    # first window: codes needed before the first audio (hop <= first_window - lookahead)
    "first 16": S(16, 300, 8, 8, 2),
    "first 24": S(24, 300, 16, 8, 2),
    "first 32": S(32, 300, 20, 12, 2),
    "first 48": S(48, 300, 24, 12, 2),
    "first 64": S(64, 300, 24, 12, 2),
    # lookahead: right context of every emitted frame
    "lookahead 4": S(36, 300, 24, 4, 2),
    "lookahead 8": S(36, 300, 24, 8, 2),
    "lookahead 24": S(48, 300, 24, 24, 2),
    # crossfade between windows (taken out of the lookahead)
    "crossfade 0": S(36, 300, 24, 12, 0),
    "crossfade 6": S(36, 300, 24, 12, 6),
    "crossfade 12": S(36, 300, 24, 12, 12),
    # steady window size and hop (decode cost ~ window / hop)
    "window 150": S(36, 150, 24, 12, 2),
    "window 225": S(36, 225, 24, 12, 2),
    "window 450": S(36, 450, 24, 12, 2),
    "hop 12": S(36, 300, 12, 12, 2),
    "hop 48": S(36, 300, 48, 12, 2),
    "low cost (CPU)": S(56, 225, 48, 8, 2),
}
QUICK = ["default", "first 16", "lookahead 4", "crossfade 0", "window 225"]


def snr_db(out: np.ndarray, ref: np.ndarray) -> float:
    noise = float(((out - ref) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((ref**2).sum()) / noise)


def measure(codec, codes: torch.Tensor, cfg: StreamingConfig) -> dict[str, float]:
    full = codec.decode(codes[None])[0].numpy()
    out = codec.decode_streaming(codes, cfg)
    assert out.shape == full.shape, (out.shape, full.shape)
    first = (cfg.first_window - cfg.lookahead) * codec.hop_length
    seg = 25 * codec.hop_length
    err = out - full
    seams = np.array([a * codec.hop_length for _, _, a, _ in stream_schedule(len(codes), cfg)[1:]], dtype=np.int64)
    step = np.abs(np.diff(err))  # step[i] = |err[i+1] - err[i]|
    inside = np.ones(step.shape[0], dtype=bool)
    inside[seams - 1] = False
    worst = min(snr_db(out[i : i + seg], full[i : i + seg]) for i in range(0, len(full) - seg + 1, seg))
    return {
        "snr": snr_db(out, full),
        "max": float(np.abs(out - full).max()),
        "first": snr_db(out[:first], full[:first]),
        "worst": worst,
        "seam": float(step[seams - 1].max()) if seams.size else 0.0,
        "inside": float(step[inside].max()),
        "cost": decode_cost(len(codes), cfg),
    }


def last_window_table(models: list[str], seeds: int = 4) -> None:
    """Utterances of 0.5-4 s (most of what a voice assistant says) with the GPU geometry: SNR
    against a full decode when the last window has its exact size (all the left context) and
    when it takes one of the captured sizes (``final_step``: replayed from a CUDA graph), every
    12 frames (as served) or the window grid only (36, 60, 108, 204, 300)."""
    configs = [
        StreamingConfig(max_hop=144),
        StreamingConfig(max_hop=144, final_step=12),
        StreamingConfig(max_hop=144, final_step=1000),
    ]
    print(
        "| model | frames | SNR dB, exact last window (mean / min) | last window every 12 frames: SNR mean / min, largest loss | "
        "last window on the grid only: SNR mean / min, largest loss |"
    )
    print("|---|---|---|---|---|")
    for model in models:
        codec = fixture_codec() if model == "fixture" else random_codec()
        for n in (40, 50, 75, 100, 150, 200, 250, 290):
            pairs = []
            for seed in range(seeds):
                codes = torch.randint(
                    0, codec.codebook_size, (n,), generator=torch.Generator().manual_seed(1000 * n + seed)
                )
                full = codec.decode(codes[None])[0].numpy()
                pairs.append([snr_db(codec.decode_streaming(codes, cfg), full) for cfg in configs])
            a, b, c = np.array(pairs).T
            print(
                f"| {model} | {n} | {a.mean():.1f} / {a.min():.1f} | {b.mean():.1f} / {b.min():.1f}, {(a - b).max():.1f} | "
                f"{c.mean():.1f} / {c.min():.1f}, {(a - c).max():.1f} |",
                flush=True,
            )


def code_streams(codec, frames: int, wavs: list[str]) -> dict[str, torch.Tensor]:
    streams = {f"{k} {frames / 75:g} s": v for k, v in token_streams(frames, codec.codebook_size).items()}
    for path in wavs:  # real speech, encoded by this codec
        samples, rate = read_audio(path)
        codes = codec.encode_clip(samples, rate)
        streams[f"{Path(path).name} {len(codes) / 75:.1f} s"] = codes
    return streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["fixture", "full", "both", "real"], default="both")
    parser.add_argument("--config", help="--model real: the WavTokenizer yaml")
    parser.add_argument("--checkpoint", help="--model real: .ckpt or .safetensors")
    parser.add_argument("--wav", action="append", default=[], help="also stream the codes of this audio file")
    parser.add_argument("--quick", action="store_true", help="five settings, shorter streams")
    parser.add_argument("--seconds", type=float, default=None, help="stream length (default 20 s, 10 s full-size)")
    parser.add_argument("--last-window", action="store_true", help="short utterances: exact vs grid-sized last window")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a busy machine)")
    args = parser.parse_args()
    if args.model == "real" and not args.checkpoint:
        parser.error("--model real needs --checkpoint (and --config unless it is a converted .safetensors)")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = QUICK if args.quick else list(SETTINGS)
    models = ["fixture", "full"] if args.model == "both" else [args.model]
    if args.last_window:
        return last_window_table([m for m in models if m != "real"])
    print(
        "| model | stream | setting | first_window / window / hop / lookahead / crossfade | first audio after | "
        "lookahead | SNR dB | max abs | first chunk SNR | worst 1/3 s SNR | error step at seams / elsewhere | cost |"
    )
    print("|" + "---|" * 12)
    for model in models:
        if model == "real":
            codec = load_codec(args.config, args.checkpoint)
        else:
            codec = fixture_codec() if model == "fixture" else random_codec()
        seconds = args.seconds or (20.0 if model == "fixture" else 10.0)
        if args.quick:
            seconds = min(seconds, 6.0)
        for stream_name, codes in code_streams(codec, int(seconds * 75), args.wav).items():
            for name in names:
                cfg, t0 = SETTINGS[name], time.perf_counter()
                m = measure(codec, codes, cfg)
                geometry = f"{cfg.first_window} / {cfg.window} / {cfg.hop} / {cfg.lookahead} / {cfg.crossfade}"
                print(
                    f"| {model} | {stream_name} | {name} | {geometry} | {cfg.first_audio_ms():.0f} ms | "
                    f"{cfg.lookahead_ms():.0f} ms | {m['snr']:.1f} | {m['max']:.4f} | {m['first']:.1f} | {m['worst']:.1f} | "
                    f"{m['seam']:.4f} / {m['inside']:.4f} | {m['cost']:.1f} |",
                    flush=True,
                )
                print(f"  ({name}: {time.perf_counter() - t0:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
