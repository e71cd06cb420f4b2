"""Streaming codec windows from CUDA graphs on the codec's own stream: same audio, how much faster?

    python bench/codec_graphs_check.py

Builds the full-size WavTokenizer (random weights, bf16 backbone) as the engine runs it, captures
the window graphs (``StreamingDecoder.capture_graphs``) and, for every grid window size and a few
batch sizes, compares a graph replay with the eager decode of the same codes (max abs difference)
and times both (CUDA events, median). Then streams random codes through ``launch`` for many
streams at once and checks the audio against the synchronous ``decode_windows`` path: 96
streams of 500 codes, and one stream per length from 36 to 340 codes, so that last windows
of every size occur (counting the windows no captured graph fitted). Last, what a window of a
size never seen costs when decoded eagerly: its first call and later ones.
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
    parser.add_argument(
        "--compile",
        action="store_true",
        help="experiment: torch.compile the backbone (dynamic shapes) before capturing",
    )
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
    graphs, stream = decoder.graphs, decoder.cuda_stream
    print("| window frames | windows | eager ms | graph ms | speed-up | max abs graph vs eager |")
    print("|---|---|---|---|---|---|")
    for size in graphs.sizes:
        for n in (n for n in (1, 8, 64) if n <= graphs.max_batch(size)):
            codes = torch.randint(0, codec.codebook_size, (n, size)).pin_memory()
            dev = codes.cuda()
            with torch.cuda.stream(stream):
                eager = codec.decode(dev, check=False).clone()
                replay = graphs.run(codes).clone()
            stream.synchronize()
            diff = (eager - replay).abs().max().item()
            t_eager = cuda_time(lambda: codec.decode(dev, check=False), 20, stream)
            t_graph = cuda_time(lambda: graphs.run(codes), 20, stream)
            print(
                f"| {size} | {n} | {t_eager:.2f} | {t_graph:.2f} | {t_eager / t_graph:.1f}x | {diff:.2e} |", flush=True
            )

    # many streams through launch() (async, graphs) vs the synchronous decode_windows()
    codes = torch.randint(0, codec.codebook_size, (96, 500))
    worst, eager = launch_vs_sync(decoder, [codes[i] for i in range(96)], push=16)
    print(
        f"\n96 streams x 500 codes through launch() (graphs, codec stream) vs decode_windows(): max abs {worst:.2e}; "
        f"windows decoded eagerly {eager}"
    )
    lengths = range(36, 341)
    worst, eager = launch_vs_sync(decoder, [torch.randint(0, codec.codebook_size, (n,)) for n in lengths], push=16)
    print(
        f"{len(lengths)} streams of 36..340 codes (every last-window size): max abs {worst:.2e}; windows decoded eagerly {eager}"
    )
    new_size_cost(codec, stream)
    dwconv_twin(codec)
    groupnorm_twin(codec)


def launch_vs_sync(decoder: StreamingDecoder, utterances: list[torch.Tensor], push: int) -> tuple[float, int]:
    """Stream the utterances through launch() and through decode_windows(); max abs difference
    of the audio, and how many windows launch() had to decode eagerly (no graph fitted)."""
    codec = decoder.codec
    async_streams = [decoder.open() for _ in utterances]
    sync_streams = [decoder.open() for _ in utterances]
    out_async = [[] for _ in utterances]
    out_sync = [[] for _ in utterances]
    launched, eager = [], 0
    run = decoder.graphs.run

    def counted_run(codes):
        nonlocal eager
        result = run(codes)
        eager += result is None
        return result

    decoder.graphs.run = counted_run
    longest = max(len(u) for u in utterances)
    for t in range(0, longest + push, push):
        ready = []
        for i, codes in enumerate(utterances):
            if t >= len(codes):  # its final window was handed out
                continue
            final = t + push >= len(codes)
            async_streams[i].push(codes[t : t + push])
            sync_streams[i].push(codes[t : t + push])
            ready.append((i, final))
        jobs = decoder.windows((i, async_streams[i], final) for i, final in ready)
        if jobs:
            launched.extend(decoder.launch(jobs))
        windows = [
            (i, w) for i, final in ready for w in iter(lambda i=i, f=final: sync_streams[i].next_window(final=f), None)
        ]
        if windows:
            audio = codec.decode_windows([w for _, w in windows])
            for (i, w), a in zip(windows, audio):
                out_sync[i].append(sync_streams[i].take(w, a))
    del decoder.graphs.run
    for item in launched:
        for i, samples in item.results():
            out_async[i].append(samples)
    assert all(s.finished for s in async_streams + sync_streams)
    worst = max(float(np.abs(np.concatenate(a) - np.concatenate(s)).max()) for a, s in zip(out_async, out_sync))
    return worst, eager


def new_size_cost(codec, stream) -> None:
    """A window of a size the process has not decoded before, decoded eagerly (what a last
    window cost before final_step): host time of the first call and of later ones."""
    print("\n| eager decode, window never seen | first call ms (host, until done) | later calls ms |")
    print("|---|---|---|")
    for batch, size in ((1, 37), (1, 131), (3, 251), (1, 299)):
        codes = torch.randint(0, codec.codebook_size, (batch, size), device="cuda")
        times = []
        for _ in range(4):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.cuda.stream(stream):
                codec.decode(codes, check=False)
            stream.synchronize()
            times.append(1000 * (time.perf_counter() - t0))
        print(f"| {batch} x {size} frames | {times[0]:.1f} | {np.median(times[1:]):.1f} |", flush=True)


def dwconv_twin(codec) -> None:
    """The Triton depthwise conv (CUDA path) against its naive twin (the CPU path's 2-D conv on
    the channels-last view, run here on CUDA), and the first call of each at shapes never seen."""
    from wyoming_lina.codec import backbone

    conv = codec.backbone.convnext[0].dwconv
    print(
        "\n| depthwise conv (B, T, C) | Triton us | cuDNN channels-last us | max abs diff | first call Triton / cuDNN ms |"
    )
    print("|---|---|---|---|---|")
    for B, T in ((64, 300), (1, 36), (97, 131), (256, 204)):
        x = torch.randn(B, T, conv.weight.shape[0], device="cuda", dtype=torch.bfloat16)
        firsts = []
        for cuda_path in (True, False):
            fn = backbone.depthwise_conv_over_time if cuda_path else backbone.conv_over_time
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(x, conv)
            torch.cuda.synchronize()
            firsts.append(1000 * (time.perf_counter() - t0))
        got, want = backbone.depthwise_conv_over_time(x, conv), backbone.conv_over_time(x, conv)
        t_triton = 1000 * cuda_time(lambda: backbone.depthwise_conv_over_time(x, conv), 50)
        t_naive = 1000 * cuda_time(lambda: backbone.conv_over_time(x, conv), 50)
        diff = (got.float() - want.float()).abs().max().item()
        print(
            f"| {B}, {T}, {x.shape[2]} | {t_triton:.1f} | {t_naive:.1f} | {diff:.2e} | {firsts[0]:.1f} / {firsts[1]:.1f} |",
            flush=True,
        )


def groupnorm_twin(codec) -> None:
    """The Triton GroupNorm (+ SiLU) over (B, T, C) against F.group_norm of the same values in
    (B, C, T) (the CPU path's twin, run here on CUDA), and the pos_net's k=3 conv on the
    channels-last view against the plain Conv1d (cuDNN transforms NCHW <-> NHWC around it)."""
    import torch.nn.functional as F

    from wyoming_lina.codec import backbone
    from wyoming_lina.codec.triton_groupnorm import group_norm_time

    norm = codec.backbone.pos_net[0].norm1
    conv = codec.backbone.pos_net[0].conv1
    print(
        "\n| (B, T, C) | GroupNorm+SiLU Triton us | F.group_norm + silu on (B, C, T) us | max abs diff | "
        "k=3 conv channels-last us | Conv1d on (B, C, T) us | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for B, T in ((64, 300), (1, 36), (16, 180), (256, 204)):
        x = 2 + 3 * torch.randn(B, T, norm.num_channels, device="cuda", dtype=torch.bfloat16)
        xc = x.transpose(1, 2).contiguous()
        got = group_norm_time(x, norm.num_groups, norm.weight, norm.bias, norm.eps, True)
        want = F.silu(F.group_norm(xc, norm.num_groups, norm.weight, norm.bias, norm.eps)).transpose(1, 2)
        t_gn = 1000 * cuda_time(lambda: group_norm_time(x, norm.num_groups, norm.weight, norm.bias, norm.eps, True), 50)
        t_ref = 1000 * cuda_time(
            lambda: F.silu(F.group_norm(xc, norm.num_groups, norm.weight, norm.bias, norm.eps)), 50
        )
        diff = (got.float() - want.float()).abs().max().item()
        y, y_ref = backbone.conv_over_time(x, conv), conv(xc).transpose(1, 2)
        t_conv = 1000 * cuda_time(lambda: backbone.conv_over_time(x, conv), 50)
        t_conv_ref = 1000 * cuda_time(lambda: conv(xc), 50)
        cdiff = (y.float() - y_ref.float()).abs().max().item()
        print(
            f"| {B}, {T}, {x.shape[2]} | {t_gn:.1f} | {t_ref:.1f} | {diff:.2e} | {t_conv:.1f} | {t_conv_ref:.1f} | {cdiff:.2e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
