"""Streaming codec windows from CUDA graphs on the codec's own stream: same audio, how much faster?

    python bench/codec_graphs_check.py

Builds the full-size WavTokenizer (random weights, bf16 backbone) as the engine runs it, captures
the window graphs (``StreamingDecoder.capture_graphs``) and, for every grid window size and a few
batch sizes, compares a graph replay with the eager decode of the same codes (max abs difference)
and times both (CUDA events, median). Then streams random codes through ``launch`` for many
streams at once and checks the audio against the synchronous ``decode_windows`` path.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_engine import cuda_time  # noqa: E402
from codec_models import move, random_codec  # noqa: E402

from wyoming_lina.engine import StreamingDecoder, streaming_config_for  # noqa: E402


@torch.inference_mode()
def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--compile", action="store_true", help="experiment: torch.compile the backbone (dynamic shapes) before capturing")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    codec = move(random_codec(), "cuda", torch.bfloat16).eval()
    if args.compile:
        codec.backbone.forward = torch.compile(codec.backbone.forward, dynamic=True)
    decoder = StreamingDecoder(codec, streaming_config_for("cuda"))
    t0 = time.monotonic()
    count = decoder.capture_graphs()
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}: {count} codec graphs captured in {time.monotonic() - t0:.1f} s, "
          f"graph pool {torch.cuda.memory_reserved() / 2**30:.2f} GiB reserved\n")  # fmt: skip
    graphs, stream = decoder.graphs, decoder.stream
    print("| window frames | windows | eager ms | graph ms | speed-up | max abs graph vs eager |")
    print("|---|---|---|---|---|---|")
    for size in graphs.sizes:
        for n in (1, 8, 64):
            codes = torch.randint(0, codec.codebook_size, (n, size)).pin_memory()
            dev = codes.cuda()
            with torch.cuda.stream(stream):
                eager = codec.decode(dev, check=False).clone()
                replay = graphs.run(codes).clone()
            stream.synchronize()
            diff = (eager - replay).abs().max().item()
            t_eager = cuda_time(lambda: codec.decode(dev, check=False), 20, stream)
            t_graph = cuda_time(lambda: graphs.run(codes), 20, stream)
            print(f"| {size} | {n} | {t_eager:.2f} | {t_graph:.2f} | {t_eager / t_graph:.1f}x | {diff:.2e} |", flush=True)

    # many streams through launch() (async, graphs) vs the synchronous decode_windows()
    streams = 96
    codes = torch.randint(0, codec.codebook_size, (streams, 500))
    async_streams = [decoder.open() for _ in range(streams)]
    sync_streams = [decoder.open() for _ in range(streams)]
    out_async = [[] for _ in range(streams)]
    out_sync = [[] for _ in range(streams)]
    launched = []
    for t in range(0, 501, 16):
        final = t + 16 > 500
        for i in range(streams):
            async_streams[i].push(codes[i, t : t + 16])
            sync_streams[i].push(codes[i, t : t + 16])
        jobs = decoder.windows((i, async_streams[i], final) for i in range(streams))
        if jobs:
            launched.extend(decoder.launch(jobs))
        windows = [(i, w) for i in range(streams) for w in iter(lambda i=i: sync_streams[i].next_window(final=final), None)]
        if windows:
            audio = codec.decode_windows([w for _, w in windows])
            for (i, w), a in zip(windows, audio):
                out_sync[i].append(sync_streams[i].take(w, a))
    for item in launched:
        for i, samples in item.results():
            out_async[i].append(samples)
    worst = max(
        float(np.abs(np.concatenate(a) - np.concatenate(s)).max())
        for a, s in zip(out_async, out_sync)
    )
    print(f"\n{streams} streams x 500 codes through launch() (graphs, codec stream) vs decode_windows(): max abs {worst:.2e}")
    dwconv_twin(codec)


def dwconv_twin(codec) -> None:
    """The Triton depthwise conv (CUDA path) against its naive twin (the CPU path's 2-D conv on
    the channels-last view, run here on CUDA), and the first call of each at shapes never seen."""
    from wyoming_lina.codec import backbone

    conv = codec.backbone.convnext[0].dwconv
    print("\n| depthwise conv (B, T, C) | Triton us | cuDNN channels-last us | max abs diff | first call Triton / cuDNN ms |")
    print("|---|---|---|---|---|")
    for B, T in ((64, 300), (1, 36), (97, 131), (256, 204)):
        x = torch.randn(B, T, conv.weight.shape[0], device="cuda", dtype=torch.bfloat16)
        firsts = []
        for cuda_path in (True, False):
            fn = backbone.depthwise_conv_over_time if cuda_path else backbone.dwconv_channels_last
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(x, conv)
            torch.cuda.synchronize()
            firsts.append(1000 * (time.perf_counter() - t0))
        got, want = backbone.depthwise_conv_over_time(x, conv), backbone.dwconv_channels_last(x, conv)
        t_triton = 1000 * cuda_time(lambda: backbone.depthwise_conv_over_time(x, conv), 50)
        t_naive = 1000 * cuda_time(lambda: backbone.dwconv_channels_last(x, conv), 50)
        diff = (got.float() - want.float()).abs().max().item()
        print(f"| {B}, {T}, {x.shape[2]} | {t_triton:.1f} | {t_naive:.1f} | {diff:.2e} | {firsts[0]:.1f} / {firsts[1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
