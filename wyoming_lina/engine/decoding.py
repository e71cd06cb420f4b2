"""Streaming codec decode for all active rows at once.

Each row owns a ``CodecStream`` (window bookkeeping). When the engine has new codes for
rows it asks them for their ready windows (``windows``), and ``launch`` decodes them all
in one batched call per window size. On CUDA that call runs on the decoder's own CUDA
stream (replayed from CUDA graphs where the size allows, see ``codec_graphs.py``) and
returns at once: the engine thread goes on launching LM steps while the codec works, and
collects the audio when the returned ``LaunchedDecode`` is ready. On the CPU the decode
happens inside ``launch``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..codec import CodecStream, StreamingConfig, WavTokenizer
from ..codec.streaming import Window
from .codec_graphs import BATCH_BUCKETS as CODEC_BATCH_BUCKETS
from .codec_graphs import FINAL_BATCH_BUCKETS, CodecGraphs, capped_buckets
from .transfer import StagingRing


def streaming_config_for(device: str) -> StreamingConfig:
    """Window geometry for where the engine runs. On a GPU generation runs many times faster
    than real time, so hops double up to 144 frames (~2 decodes per frame instead of ~10;
    docs/codec.md) and the last window takes one of a few sizes (every 12 frames: every window
    replays a captured CUDA graph); on a CPU every hop stays 24 frames (no underrun at 1x real time) and the last
    window keeps all its left context."""
    if torch.device(device).type == "cuda":
        return StreamingConfig(max_hop=144, final_step=12)
    return StreamingConfig()


@dataclass
class LaunchedDecode:
    """Windows on their way through the codec: ``ready()`` says whether their audio is on the
    host; ``results()`` hands it out per row (call once, in launch order)."""

    windows: list[tuple[object, CodecStream, Window]]  # (row, its codec stream, window)
    audio: list  # per window: float32 host samples (numpy views of pinned memory on CUDA)
    event: torch.cuda.Event | None = None
    keep_alive: list[torch.Tensor] = field(default_factory=list)  # host ends of the async copies
    staging: StagingRing | None = None  # where ``regions`` live; given back once the audio is taken
    regions: list[tuple[int, int]] = field(default_factory=list)

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()

    def results(self) -> list[tuple[object, np.ndarray]]:
        """(row, float32 samples to play) per row, its windows taken in order."""
        self.wait()
        out: dict[int, tuple[object, list[np.ndarray]]] = {}
        try:
            for (row, stream, window), samples in zip(self.windows, self.audio):
                out.setdefault(id(row), (row, []))[1].append(stream.take(window, samples))  # (copies)
        finally:  # even if a take failed: later launches give their regions back after these
            for region in self.regions:
                self.staging.release(region)
        return [(row, pieces[0] if len(pieces) == 1 else np.concatenate(pieces)) for row, pieces in out.values()]


class StreamingDecoder:
    def __init__(self, codec: WavTokenizer, config: StreamingConfig | None = None):
        codec.backbone.fold_layer_scales()  # inference from here on (ConvNeXtBlock.fold_layer_scale)
        codec.backbone.cache_conv_weights()
        self.codec = codec
        self.config = config or StreamingConfig()
        self.cuda_stream: torch.cuda.Stream | None = None  # CUDA: the codec's own stream
        self.graphs: CodecGraphs | None = None
        self.staging: StagingRing | None = None  # CUDA: pinned memory for codes in, audio out
        if codec.device.type == "cuda":  # high priority: a first window decodes ahead of LM kernels
            self.cuda_stream = torch.cuda.Stream(device=codec.device, priority=-5)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def samples_per_frame(self) -> int:
        return self.codec.hop_length

    def open(self) -> CodecStream:
        return self.codec.new_stream(self.config)

    def prepare_graphs(self, rows: int, batch_buckets: tuple[int, ...] | None = None) -> list[tuple[int, int]]:
        """CUDA: set aside pinned memory for two full windows of ``rows`` streams in flight (~200 MB
        at 256; ``StagingRing``) and plan one graph per window size a stream hands out (the grid's
        at every batch bucket up to ``rows``, last windows' other sizes at small buckets). Returns
        the (bucket, size) keys still to capture (``capture_graph``); [] on the CPU. Until a size
        is captured, its windows decode eagerly."""
        if self.cuda_stream is None:
            return []
        if self.staging is None:
            frames = 2 * rows * self.config.window
            self.staging = StagingRing(frames * (self.codec.hop_length * 4 + 8) + (1 << 20))
        if self.graphs is None:
            buckets = capped_buckets(batch_buckets or CODEC_BATCH_BUCKETS, rows)
            finals = capped_buckets(FINAL_BATCH_BUCKETS, rows)
            sizes, final = list(self.config.grid_sizes()), self.config.final_sizes()
            self.graphs = CodecGraphs(
                self.codec,
                self.cuda_stream,
                sizes,
                batch_buckets=buckets,
                final_sizes=final,
                final_batch_buckets=finals,
            )
        return [key for key in self.graphs.keys() if key not in self.graphs]

    @torch.inference_mode()
    def prepare_kernels(self, keys: list[tuple[int, int]]) -> None:
        """ON ANOTHER THREAD than the engine's: decode zeros once at every planned (bucket, size)
        on a private stream, so the codec's Triton kernels are built before the engine thread
        captures its graphs between iterations."""
        if not keys:
            return
        stream = torch.cuda.Stream(self.codec.device)
        with torch.cuda.stream(stream):
            for rows, size in keys:
                self.codec.decode(torch.zeros(rows, size, dtype=torch.long, device=self.codec.device), check=False)
        stream.synchronize()

    def capture_graph(self, key: tuple[int, int]) -> bool:
        """Capture one planned codec graph (a few ms; between engine iterations)."""
        return self.graphs.capture(key)

    def capture_graphs(self, batch_buckets: tuple[int, ...] | None = None, rows: int = 256) -> int:
        """Plan and capture every codec graph now (start-up, a few seconds). Returns how many exist
        (0 on the CPU)."""
        for key in self.prepare_graphs(rows, batch_buckets):
            self.capture_graph(key)
        return len(self.graphs) if self.graphs is not None else 0

    @staticmethod
    def windows(rows: Iterable[tuple[object, CodecStream, bool]]) -> list[tuple[object, CodecStream, Window]]:
        """(row, stream, final) -> every window those streams can decode now."""
        windows = []
        for row, stream, final in rows:
            while (window := stream.next_window(final=final)) is not None:
                windows.append((row, stream, window))
        return windows

    @torch.inference_mode()
    def launch(self, windows: list[tuple[object, CodecStream, Window]]) -> list[LaunchedDecode]:
        """Decode the windows (equal sizes batched); on CUDA asynchronously on the codec stream.

        Hand the results out in the order returned. On CUDA, when every window belongs to a
        different row (the usual case), each batched call is its own ``LaunchedDecode`` with its
        own event, so the host takes the audio of the first calls while the GPU decodes the rest
        (at 256 rows: four calls of 64 windows, ~12 ms of GPU each)."""
        audio: list = [None] * len(windows)
        by_size: dict[int, list[int]] = {}
        for i, (_, _, window) in enumerate(windows):
            by_size.setdefault(window.size, []).append(i)
        if self.cuda_stream is None:
            for indices in by_size.values():
                codes = torch.stack([windows[i][2].codes for i in indices]).to(self.codec.device)
                decoded = self.codec.decode(codes, check=False).float().cpu().numpy()
                for k, i in enumerate(indices):
                    audio[i] = decoded[k]
            return [LaunchedDecode(windows, audio)]
        staged: list[list[tuple[int, int]]] = []  # per batched call, its staging regions
        try:
            return self._launch_cuda(windows, by_size, audio, staged)
        except BaseException:  # nothing will take their audio: give the staging memory back
            for region in reversed([r for regions in staged for r in regions]):
                self.staging.rollback(region)
            raise

    def _launch_cuda(self, windows, by_size, audio, staged: list) -> list[LaunchedDecode]:
        parts: list[LaunchedDecode] = []
        with torch.cuda.stream(self.cuda_stream):
            for size, indices in by_size.items():
                chunk = self.graphs.max_batch(size) if self.graphs is not None else 64
                for lo in range(0, len(indices), chunk):
                    part = indices[lo : lo + chunk]
                    regions: list[tuple[int, int]] = []
                    staged.append(regions)
                    codes = self._pinned((len(part), size), torch.long, regions)
                    torch.stack([windows[i][2].codes for i in part], out=codes)
                    decoded = self.graphs.run(codes) if self.graphs is not None else None
                    if decoded is None:
                        decoded = self.codec.decode(codes.to(self.codec.device, non_blocking=True), check=False)
                    host = self._pinned(tuple(decoded.shape), torch.float32, regions)
                    host.copy_(decoded, non_blocking=True)
                    rows = host.numpy()  # views, read once the event says the copy is done
                    for k, i in enumerate(part):
                        audio[i] = rows[k]
                    event = torch.cuda.Event()
                    event.record(self.cuda_stream)
                    parts.append(
                        LaunchedDecode(
                            [windows[i] for i in part],
                            [audio[i] for i in part],
                            event,
                            [codes, host],
                            self.staging,
                            regions,
                        )
                    )
        if len({id(row) for row, _, _ in windows}) < len(windows):  # a row's windows must be taken in order
            keep = [t for p in parts for t in p.keep_alive]
            return [
                LaunchedDecode(
                    windows, audio, parts[-1].event, keep, self.staging, [r for p in parts for r in p.regions]
                )
            ]
        return parts

    def _pinned(self, shape: tuple[int, ...], dtype: torch.dtype, regions: list) -> torch.Tensor:
        """Pinned host memory from the staging ring (its region appended to ``regions``), or
        freshly allocated when there is no ring or it is full."""
        got = self.staging.alloc(shape, dtype) if self.staging is not None else None
        if got is None:
            return torch.empty(shape, dtype=dtype, pin_memory=True)
        regions.append(got[1])
        return got[0]

    def drop_pending(self) -> None:
        """The engine dropped every launched decode without taking its audio (a failure)."""
        if self.staging is not None:
            self.staging.reset()
