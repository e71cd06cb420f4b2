"""Streaming codec decode for all active rows at once.

Each row owns a ``CodecStream`` (window bookkeeping). After every generation step the
engine asks every row for its ready windows, decodes them all in one batched codec call
(equal window sizes share a batch) and hands each row the samples it may play.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from ..codec import CodecStream, StreamingConfig, WavTokenizer


def streaming_config_for(device: str) -> StreamingConfig:
    """Window geometry for where the engine runs. On a GPU generation runs many times faster
    than real time, so hops double up to 144 frames (~2 decodes per frame instead of ~10;
    docs/codec.md); on a CPU every hop stays 24 frames (no underrun at 1x real time)."""
    if torch.device(device).type == "cuda":
        return StreamingConfig(max_hop=144)
    return StreamingConfig()


class StreamingDecoder:
    def __init__(self, codec: WavTokenizer, config: StreamingConfig | None = None):
        self.codec = codec
        self.config = config or StreamingConfig()

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def open(self) -> CodecStream:
        return self.codec.new_stream(self.config)

    def push(self, stream: CodecStream, codes: list[int]) -> None:
        stream.push(codes)

    def decode(self, rows: Iterable[tuple[object, bool]], stream_of: Callable[[object], CodecStream]):
        """rows: (row, final) pairs. Yields (row, float32 samples) for rows with new audio."""
        jobs = []  # (row, stream, window)
        for row, final in rows:
            stream = stream_of(row)
            while (window := stream.next_window(final=final)) is not None:
                jobs.append((row, stream, window))
        if not jobs:
            return
        audio = self.codec.decode_windows([w for _, _, w in jobs])
        out: dict[int, tuple[object, list[np.ndarray]]] = {}
        for (row, stream, window), samples in zip(jobs, audio):
            out.setdefault(id(row), (row, []))[1].append(stream.take(window, samples))
        for row, pieces in out.values():
            yield row, np.concatenate(pieces)
