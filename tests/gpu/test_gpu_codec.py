"""The codec on CUDA as the engine runs it: window graphs and the asynchronous streaming launch.

What bench/codec_graphs_check.py and bench/codec_gpu_check.py print, asserted:

* a captured window graph (``CodecGraphs.run``) decodes what ``codec.decode`` decodes: bitwise at a
  captured batch size (docs/benchmarks.md: "graph replay and eager decode give identical audio, max
  abs 0"), and at a batch padded up to its bucket within the shape-dependent rounding of the dtype;
* ``StreamingDecoder.launch`` on CUDA (graphs on the codec's own stream, pinned staging, audio
  taken in launch order) gives the audio of the CPU path (tiny codec, float32) and of the synchronous
  ``decode_windows`` (full-size codec, bf16), every stream exactly 320 samples per code, with no
  window of a stream of >= 36 codes left to an eager decode.

Bounds (relative): float32 1e-5 (docs/benchmarks.md: the fixture codec on CUDA is 3.3e-7 max abs,
128.6 dB, from the CPU). bf16 3e-2: the bf16 backbone is 37.1 dB from float32 (relative 1.4e-2), and
two bf16 decodes whose GEMMs differ only in batch size are each that close to float32, so at most
2 x 1.4e-2 apart (docs/benchmarks.md measured 8.3e-4 max abs between them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wyoming_lina.engine import StreamingDecoder

from .conftest import assert_rel, requires_cuda

pytestmark = requires_cuda

SAME_SHAPE = 1e-6
PADDED = {torch.float32: 1e-5, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("which", ["tiny", "full"])
@torch.inference_mode()
def test_window_graphs_decode_what_the_eager_decode_does(which, request):
    decoder = request.getfixturevalue(f"{which}_decoder")
    codec, graphs, stream = decoder.codec, decoder.graphs, decoder.cuda_stream
    assert len(graphs) == sum(len(graphs.buckets[size]) for size in graphs.sizes)  # all captured
    assert set(decoder.config.grid_sizes()) | set(decoder.config.final_sizes()) == set(graphs.sizes)
    gen = torch.Generator().manual_seed(0)
    for size in graphs.sizes:
        buckets = graphs.buckets[size]
        for n in sorted({1, 3, buckets[-1]}):  # captured batch sizes (1, the largest), and 3 in the 4-row graph
            codes = torch.randint(0, codec.codebook_size, (n, size), generator=gen).pin_memory()
            with torch.cuda.stream(stream):
                replay = graphs.run(codes)
                assert replay is not None, f"no graph for {n} windows of {size} frames"
                replay = replay.clone()  # the graph's static output: the next replay overwrites it
                eager = codec.decode(codes.to(codec.device, non_blocking=True), check=False).clone()
            stream.synchronize()
            assert replay.shape == (n, codec.hop_length * size)
            bound = SAME_SHAPE if n in buckets else PADDED[codec.backbone_dtype]
            assert_rel(replay, eager, bound, f"{which}: {n} windows of {size} frames, graph vs eager")
    assert graphs.run(torch.zeros(1, 37, dtype=torch.long).pin_memory()) is None  # no such window size
    largest = max(graphs.buckets[300])
    assert graphs.run(torch.zeros(largest + 1, 300, dtype=torch.long).pin_memory()) is None  # beyond the largest bucket


def stream_through(
    decoder: StreamingDecoder, utterances: list[torch.Tensor], push: int = 16
) -> tuple[list[np.ndarray], int]:
    """Stream every utterance ``push`` codes at a time through ``decoder.launch`` as the engine's
    output processor does (every stream's ready windows launched together, audio taken in launch
    order). Returns the audio per utterance and how many batched calls no captured graph fitted."""
    streams = [decoder.open() for _ in utterances]
    audio: list[list[np.ndarray]] = [[] for _ in utterances]
    eager = 0
    graphs = decoder.graphs
    if graphs is not None:
        run = graphs.run

        def counted(codes):
            nonlocal eager
            result = run(codes)
            eager += result is None
            return result

        graphs.run = counted
    try:
        for t in range(0, max(len(u) for u in utterances), push):
            ready = []
            for i, codes in enumerate(utterances):
                if t < len(codes):
                    streams[i].push(codes[t : t + push])
                    ready.append((i, streams[i], t + push >= len(codes)))
            windows = decoder.windows(ready)
            for launched in decoder.launch(windows) if windows else []:
                for i, samples in launched.results():
                    audio[i].append(samples)
    finally:
        if graphs is not None:
            del graphs.run
    assert all(s.finished for s in streams)
    return [np.concatenate(pieces) for pieces in audio], eager


def stream_synchronously(codec, config, utterances: list[torch.Tensor], push: int = 16) -> list[np.ndarray]:
    """The same streams decoded by ``codec.decode_windows`` (eager, synchronous): the reference."""
    streams = [codec.new_stream(config) for _ in utterances]
    audio: list[list[np.ndarray]] = [[] for _ in utterances]
    for t in range(0, max(len(u) for u in utterances), push):
        windows = []
        for i, codes in enumerate(utterances):
            if t < len(codes):
                streams[i].push(codes[t : t + push])
                final = t + push >= len(codes)
                while (window := streams[i].next_window(final=final)) is not None:
                    windows.append((i, window))
        for (i, window), decoded in zip(windows, codec.decode_windows([w for _, w in windows])):
            audio[i].append(streams[i].take(window, decoded))
    assert all(s.finished for s in streams)
    return [np.concatenate(pieces) for pieces in audio]


def random_utterances(lengths, codebook_size: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, codebook_size, (n,), generator=gen) for n in lengths]


@torch.inference_mode()
def test_streaming_launch_on_cuda_equals_the_cpu_path(tiny_decoder, codec):
    """Tiny codec, float32: CUDA (graphs, codec stream) against the CPU engine's decoder (``codec``
    is the tests' CPU fixture codec), for lengths covering every last-window size and a few long
    streams; utterances shorter than the first window decode their one window eagerly."""
    cpu = StreamingDecoder(codec, tiny_decoder.config)
    lengths = list(range(36, 341, 5)) + [500, 777]
    utterances = random_utterances(lengths, codec.codebook_size, seed=1)
    got, eager = stream_through(tiny_decoder, utterances)
    want, _ = stream_through(cpu, utterances)
    assert eager == 0, f"{eager} batched calls of streams of >= 36 codes had no captured graph"
    for n, a, b in zip(lengths, got, want):
        assert a.shape == b.shape == (n * 320,)
        assert_rel(a, b, PADDED[torch.float32], f"{n} codes, CUDA launch vs CPU")
    short = random_utterances(range(1, 36), codec.codebook_size, seed=2)
    got, _ = stream_through(tiny_decoder, short)
    want, _ = stream_through(cpu, short)
    for codes, a, b in zip(short, got, want):
        assert a.shape == b.shape == (len(codes) * 320,)
        assert_rel(a, b, PADDED[torch.float32], f"{len(codes)} codes, CUDA launch vs CPU")


@torch.inference_mode()
def test_streaming_launch_equals_the_synchronous_decode(full_decoder):
    """Full-size codec, bf16 backbone, as served: 305 streams of 36..340 codes (every last-window
    size) and 16 of 500 through ``launch`` against ``decode_windows`` of the same windows."""
    codec = full_decoder.codec
    lengths = list(range(36, 341)) + [500] * 16
    utterances = random_utterances(lengths, codec.codebook_size, seed=3)
    got, eager = stream_through(full_decoder, utterances)
    want = stream_synchronously(codec, full_decoder.config, utterances)
    assert eager == 0, f"{eager} batched calls had no captured graph"
    for n, a, b in zip(lengths, got, want):
        assert a.shape == b.shape == (n * 320,)
        assert np.abs(b).max() > 0
        assert_rel(a, b, PADDED[torch.bfloat16], f"{n} codes, launch vs decode_windows")
