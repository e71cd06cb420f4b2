"""Windowed streaming decode: audio while the language model is still producing codes.

The WavTokenizer decoder is not causal (global attention and GroupNorm statistics), so no
finite window reproduces a full decode exactly. A stream decodes overlapping windows of
codes and keeps, from each, only frames that have enough context on both sides:

    frames:   0 ............................................. n (codes so far)
    window k:           [s_k ........................ e_k)       e_k = e_{k-1} + hop_{k-1}, e_0 = first_window
    emitted by k:                    [e_{k-1}-L ... e_k-L)          L = lookahead
    blended:                         [e_{k-1}-L, e_{k-1}-L+C)       C = crossfade

* Window ends sit on a fixed grid (hops of ``hop`` frames, or doubling from ``hop`` up to
  ``max_hop``), so the window is ready as soon as the stream holds
  ``e_k`` codes, and its size is ``min(e_k, window)``: after the first few windows every
  window of every stream has the same size and they are decoded as one batch
  (``WavTokenizer.decode_windows`` groups equal sizes).
* The first window is smaller (``first_window``) so the first audio comes early; it emits
  ``first_window - lookahead`` frames.
* Each window's audio for the ``crossfade`` frames after what it emits is kept as a tail and
  blended (raised-cosine, weights summing to 1) into the next window's first frames.
* ``final=True`` (no more codes): the last window ends at the last code and emits the rest
  with no lookahead. If the whole utterance fits one window before anything was emitted,
  that window is the whole utterance and the output equals a full decode.
* ``final_step`` (GPU): the last window takes the largest of a small set of sizes
  (``final_sizes``: the grid sizes and every ``final_step`` frames from ``first_window`` to
  ``window``) that fits the codes and still covers what is left to emit, so it can be
  replayed from a captured CUDA graph like every other window instead of being decoded
  eagerly at its own odd size (~300 kernel launches, new shapes for cuDNN). It gives up at
  most ``final_step - 1`` frames of left context; an utterance shorter than ``first_window``
  keeps its exact window.

The stream is bookkeeping only (no model, no device work): ``next_window`` hands out
``Window`` objects, the caller decodes them (batched across streams), and ``take`` turns a
window's decoded audio into the samples to play. For T codes the emitted samples total
exactly ``hop_length * T``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class StreamingConfig:
    """Window geometry in codec frames (1 frame = 320 samples = 13.3 ms at 24 kHz)."""

    first_window: int = 36  # codes needed before the first audio; it emits first_window - lookahead frames
    window: int = 300  # steady window size (4 s; training crops were 3 s)
    hop: int = 24  # new frames per steady window; <= first_window - lookahead: no underrun at 1x real time
    lookahead: int = 12  # frames decoded after the last emitted frame (right context); includes the crossfade
    crossfade: int = 2  # frames blended between consecutive windows (keep <= lookahead / 2)
    # hops double after each window, from ``hop`` up to this (None: every hop is ``hop``). Fewer,
    # longer steps cut the decode work (~window / max_hop per frame instead of window / hop);
    # no underrun needs generation at >= 2x real time (a GPU; not a CPU).
    max_hop: int | None = None
    # > 0: the last window takes one of ``final_sizes`` (module docstring); GPU: graph-replayable
    final_step: int = 0

    def __post_init__(self) -> None:
        problems = []
        if min(self.first_window, self.window, self.hop) < 1 or min(self.lookahead, self.crossfade) < 0:
            problems.append("window sizes must be positive and lookahead/crossfade non-negative")
        if self.crossfade > self.lookahead:
            problems.append(f"crossfade {self.crossfade} > lookahead {self.lookahead} (the tail must be decoded)")
        if self.crossfade > self.hop:
            problems.append(f"crossfade {self.crossfade} > hop {self.hop}")
        if self.first_window <= self.lookahead:
            problems.append(f"first_window {self.first_window} must exceed lookahead {self.lookahead}")
        if self.window < self.first_window:
            problems.append(f"window {self.window} < first_window {self.first_window}")
        if self.final_step < 0:
            problems.append(f"final_step {self.final_step} < 0")
        if self.max_hop is not None and self.max_hop < self.hop:
            problems.append(f"max_hop {self.max_hop} < hop {self.hop}")
        if self.window < self.largest_hop + self.lookahead:
            problems.append(f"window {self.window} < hop + lookahead {self.largest_hop + self.lookahead}")
        if problems:
            raise ValueError("invalid StreamingConfig: " + "; ".join(problems))

    @property
    def largest_hop(self) -> int:
        return self.hop if self.max_hop is None else self.max_hop

    def hop_after(self, index: int) -> int:
        """Frames between the end of window ``index`` and the end of the next one."""
        if self.max_hop is None:
            return self.hop
        return min(self.max_hop, self.hop << min(index, 30))

    def grid_sizes(self) -> tuple[int, ...]:
        """Sizes of every non-final window a stream can hand out (their ends sit on a fixed
        grid, so after the first few every window has the steady size)."""
        sizes, end, index = [], self.first_window, 0
        while True:
            size = min(end, self.window)
            sizes.append(size)
            if size == self.window:
                return tuple(sizes)
            end += self.hop_after(index)
            index += 1

    def final_sizes(self) -> tuple[int, ...]:
        """Sizes a last window may take with ``final_step`` (none without)."""
        if not self.final_step:
            return ()
        return tuple(sorted(set(self.grid_sizes()) | set(range(self.first_window, self.window + 1, self.final_step))))

    def lookahead_ms(self, frame_rate: float = 75.0) -> float:
        return 1000.0 * self.lookahead / frame_rate

    def first_audio_ms(self, frame_rate: float = 75.0) -> float:
        """Audio-time of codes that must exist before the first window can be decoded."""
        return 1000.0 * self.first_window / frame_rate


@dataclass(frozen=True, eq=False)
class Window:
    """One decode job: ``codes`` are frames [start, start + size) of the utterance."""

    index: int  # per-stream sequence number; ``take`` must see windows in this order
    codes: torch.Tensor  # (size,) long
    start: int
    emit_start: int  # frames [emit_start, emit_end) become audio when taken
    emit_end: int
    final: bool

    @property
    def size(self) -> int:
        return int(self.codes.shape[0])


@functools.lru_cache(maxsize=8)
def fade_in(n: int) -> np.ndarray:
    """Raised-cosine ramp 0 -> 1 over n samples; fade_in + fade_in[::-1] == 1 (read-only, cached)."""
    ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)
    ramp.flags.writeable = False
    return ramp


class CodecStream:
    """Per-utterance streaming state: ``push`` codes, ``next_window``, decode, ``take``."""

    def __init__(self, config: StreamingConfig | None = None, hop_length: int = 320):
        self.config = config or StreamingConfig()
        self.hop_length = hop_length
        self._chunks: list[torch.Tensor] = []
        self._n = 0  # codes pushed
        self._final = False
        self._scheduled = 0  # windows handed out
        self._scheduled_end = 0  # emit_end of the last window handed out
        self._next_end = self.config.first_window  # grid end of the next window
        self._closed = False  # the final window was handed out
        self._taken = 0  # windows taken
        self._tail: np.ndarray | None = None  # crossfade samples from the last taken window
        self.emitted_frames = 0

    @property
    def num_codes(self) -> int:
        return self._n

    @property
    def finished(self) -> bool:
        """True once the final window has been taken (all audio emitted)."""
        return self._closed and self._taken == self._scheduled

    def push(self, codes) -> None:
        """Append codes (int, sequence, numpy or tensor of any device; flattened)."""
        if self._final:
            raise RuntimeError("push() after the stream was marked final")
        codes = torch.as_tensor(codes).reshape(-1).long()
        if codes.numel():
            self._chunks.append(codes)
            self._n += codes.numel()

    def _codes(self, start: int, end: int) -> torch.Tensor:
        if len(self._chunks) > 1:
            self._chunks = [torch.cat(self._chunks)]
        return self._chunks[0][start:end]

    def next_window(self, final: bool = False) -> Window | None:
        """The next window to decode, or None if not enough codes yet (or nothing left).

        ``final=True`` says no more codes will be pushed; call again until it returns None.
        """
        self._final = self._final or final
        if self._closed:
            return None
        cfg, n, k = self.config, self._n, self._scheduled
        end = self._next_end  # grid end of window k
        if self._final:
            if n == self._scheduled_end:  # nothing left (no codes at all, or lookahead 0)
                self._closed = True
                return None
            grid_window_first = cfg.final_step and n > end  # a whole grid window is ready: it goes out first
            if not grid_window_first and (n <= end or (k == 0 and n <= cfg.window)):  # the rest fits one window
                return self._make(k, self._final_start(n), n, n, final=True)
        if n < end:
            return None
        return self._make(k, max(0, end - cfg.window), end, end - cfg.lookahead, final=False)

    def _final_start(self, n: int) -> int:
        """First code of the last window (it ends at code n)."""
        exact = max(0, n - self.config.window)
        if not self.config.final_step:
            return exact
        fitting = [size for size in self.config.final_sizes() if size <= n]
        if fitting and n - fitting[-1] <= self._scheduled_end:  # covers every frame not yet emitted
            return n - fitting[-1]
        return exact  # shorter than the first window (or an odd geometry): its own size

    def _make(self, index: int, start: int, end: int, emit_end: int, final: bool) -> Window:
        window = Window(index, self._codes(start, end), start, self._scheduled_end, emit_end, final)
        self._next_end += self.config.hop_after(index)
        self._scheduled += 1
        self._scheduled_end = emit_end
        self._closed = final
        return window

    def take(self, window: Window, audio) -> np.ndarray:
        """Float32 samples to play for ``window``, given its decoded audio (hop * size samples)."""
        if window.index != self._taken:
            raise ValueError(f"windows must be taken in order: expected {self._taken}, got {window.index}")
        hop = self.hop_length
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().float().cpu().numpy()
        if audio.dtype != np.float32 or audio.ndim != 1:
            audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.shape[0] != hop * window.size:
            raise ValueError(f"window of {window.size} frames needs {hop * window.size} samples, got {audio.shape[0]}")
        a, b = (window.emit_start - window.start) * hop, (window.emit_end - window.start) * hop
        out = audio[a:b].copy()
        if self._tail is not None:
            ramp = fade_in(self._tail.shape[0])
            m = self._tail.shape[0]
            out[:m] = self._tail * (1.0 - ramp) + out[:m] * ramp
        c = self.config.crossfade * hop
        self._tail = None if window.final or c == 0 else audio[b : b + c].copy()
        self._taken += 1
        self.emitted_frames = window.emit_end
        return out


@functools.lru_cache(maxsize=4096)
def stream_schedule(num_codes: int, config: StreamingConfig) -> tuple[tuple[int, int, int, int], ...]:
    """(start, end, emit_start, emit_end) of every window when codes arrive one by one.

    For docs, benchmarks and the CPU's choice of windows (engine/cpu_speed.py): how many decodes an
    utterance costs and where its audio comes from. Cached: a geometry's schedule never changes.
    """
    stream = CodecStream(config)
    spans = []
    for t in range(num_codes + 1):
        final = t == num_codes
        if not final:
            stream.push(0)
        while (w := stream.next_window(final=final)) is not None:
            spans.append((w.start, w.start + w.size, w.emit_start, w.emit_end))
            stream.take(w, np.zeros(w.size * stream.hop_length, np.float32))
    return tuple(spans)


def decode_cost(num_codes: int, config: StreamingConfig) -> float:
    """Decoded frames per emitted frame (1.0 = one full decode)."""
    return sum(e - s for s, e, _, _ in stream_schedule(num_codes, config)) / max(num_codes, 1)
