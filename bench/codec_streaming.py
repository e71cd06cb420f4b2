"""How far the windowed streaming decode is from a full decode, for several window settings.

    .venv/bin/python bench/codec_streaming.py                  # fixture + full-size random model
    .venv/bin/python bench/codec_streaming.py --model fixture  # seconds
    .venv/bin/python bench/codec_streaming.py --quick          # fewer settings, shorter streams

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
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codec_models import fixture_codec, random_codec, token_streams  # noqa: E402

from wyoming_lina.codec import StreamingConfig  # noqa: E402
from wyoming_lina.codec.streaming import decode_cost, stream_schedule  # noqa: E402

DEFAULT = StreamingConfig()


def _vary(**changes) -> StreamingConfig:
    return replace(DEFAULT, **changes)


SETTINGS = {
    "default": DEFAULT,
    # first window: codes needed before the first audio
    "first 16": _vary(first_window=16, lookahead=8, hop=8),
    "first 24": _vary(first_window=24, lookahead=8, hop=16),
    "first 32": _vary(first_window=32, lookahead=8, hop=24),
    "first 40": _vary(first_window=40),
    "first 64": _vary(first_window=64),
    # lookahead (right context of every emitted frame)
    "lookahead 4": _vary(lookahead=4, crossfade=4),
    "lookahead 8": _vary(lookahead=8, crossfade=4),
    "lookahead 12": _vary(lookahead=12, first_window=max(DEFAULT.first_window, 13)),
    "lookahead 24": _vary(lookahead=24, first_window=max(DEFAULT.first_window, 40)),
    # crossfade between windows
    "crossfade 0": _vary(crossfade=0),
    "crossfade 8": _vary(crossfade=min(8, DEFAULT.lookahead)),
    # steady window size and hop
    "window 150": _vary(window=150),
    "window 225": _vary(window=225),
    "window 450": _vary(window=450),
    "hop 12": _vary(hop=12),
    "hop 50": _vary(hop=50),
    "window 225 hop 50": _vary(window=225, hop=50),
    "window 450 hop 50": _vary(window=450, hop=50),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["fixture", "full", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="five settings, shorter streams")
    parser.add_argument("--seconds", type=float, default=None, help="stream length (default 20 s, 10 s full-size)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = QUICK if args.quick else list(SETTINGS)
    models = ["fixture", "full"] if args.model == "both" else [args.model]
    print("| model | stream | setting | first_window / window / hop / lookahead / crossfade | first audio after | "
          "lookahead | SNR dB | max abs | first chunk SNR | worst 1/3 s SNR | error step at seams / elsewhere | cost |")
    print("|" + "---|" * 12)
    for model in models:
        codec = fixture_codec() if model == "fixture" else random_codec()
        seconds = args.seconds or (20.0 if model == "fixture" else 10.0)
        if args.quick:
            seconds = min(seconds, 6.0)
        frames = int(seconds * 75)
        for stream_name, codes in token_streams(frames, codec.codebook_size).items():
            for name in names:
                cfg, t0 = SETTINGS[name], time.perf_counter()
                m = measure(codec, codes, cfg)
                geometry = f"{cfg.first_window} / {cfg.window} / {cfg.hop} / {cfg.lookahead} / {cfg.crossfade}"
                print(
                    f"| {model} | {stream_name} {seconds:g} s | {name} | {geometry} | {cfg.first_audio_ms():.0f} ms | "
                    f"{cfg.lookahead_ms():.0f} ms | {m['snr']:.1f} | {m['max']:.4f} | {m['first']:.1f} | {m['worst']:.1f} | "
                    f"{m['seam']:.4f} / {m['inside']:.4f} | {m['cost']:.1f} |",
                    flush=True,
                )
                print(f"  ({name}: {time.perf_counter() - t0:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
