"""Tokens to audio: the log of sampled tokens, each row's codec windows, and delivery in order.

Per step the work is vectorised: the step's tokens are logged as one array (EOS found with
numpy; a row's first-window point and frame limit are milestones scheduled by step number when
it joins) and handed to the rows' codec streams only when a row ends, reaches its first window,
or every ``decode_interval`` steps, all logged steps of a row at once. Then the windows that
became decodable are launched in one batched call per size (``StreamingDecoder.launch``; on CUDA
asynchronously on the codec's stream), and their audio is handed out in launch order once it is
on the host. A row that ended hears so after its last audio.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import torch

from ..model import EOS, N_SPECIAL_AUDIO
from .decoding import LaunchedDecode, StreamingDecoder
from .job import JobHandle
from .rows import Row
from .runner import StepTokens


@dataclass(frozen=True)
class _Audio:
    """Decoded windows on their way to the host."""

    decode: LaunchedDecode

    def ready(self) -> bool:
        return self.decode.ready()

    def deliver(self) -> None:
        JobHandle.deliver_many([(row.handle, audio) for row, audio in self.decode.results() if len(audio)])

    def rows(self) -> list[Row]:
        return [row for row, _, _ in self.decode.windows]


@dataclass(frozen=True)
class _Ending:
    """Rows whose generation ended: they finish once everything launched before is out."""

    ended: list[Row]

    def ready(self) -> bool:
        return True

    def deliver(self) -> None:
        Row.finish_all(self.ended)

    def rows(self) -> list[Row]:
        return self.ended


class OutputProcessor:
    def __init__(self, decoder: StreamingDecoder, decode_interval: int):
        self.decoder = decoder
        self.decode_interval = decode_interval
        self.limit_step = 0  # the step at which every admitted row has met its frame limit
        self._log: list[StepTokens] = []  # steps not yet handed to their rows
        self._milestones: dict[int, list[Row]] = collections.defaultdict(
            list
        )  # step -> rows at their first window or limit
        self._pending: collections.deque[_Audio | _Ending] = collections.deque()  # in launch order

    @property
    def busy(self) -> bool:
        """Audio is still on its way out."""
        return bool(self._pending)

    @property
    def idle(self) -> bool:
        """No token waits for its row and no audio for its caller."""
        return not (self._pending or self._log)

    def track(self, rows: list[Row]) -> None:
        """Rows joined the batch: schedule the steps of their first window and their frame limit."""
        first_window = self.decoder.config.first_window
        for row in rows:
            self._milestones[row.first_step + first_window - 1].append(row)
            limit = row.first_step + row.job.max_frames - 1
            self._milestones[limit].append(row)
            self.limit_step = max(self.limit_step, limit)

    def process(self, done: StepTokens) -> list[Row] | None:
        """Record one step's tokens; end rows at EOS or their frame limit; when rows end, reach
        their first audio, or every ``decode_interval`` steps, hand the logged tokens to the rows
        and launch the codec windows that became decodable. Returns the rows that ended ([] if
        none), or None when nothing was handed to the rows this step."""
        step, rows = done.step, done.rows
        self._log.append(done)
        ended, first = [], []
        for i in np.flatnonzero(done.tokens == EOS).tolist():
            row = rows[i]
            if row.generating:  # not the extra step of a row that already ended or left
                row.end(step, "eos")
                ended.append(row)
        for row in self._milestones.pop(step, ()):
            if not row.generating:
                continue
            if row.frame_count(step) >= row.job.max_frames:
                row.end(step, "max_frames")
                ended.append(row)
            else:
                first.append(row)
        periodic = step % self.decode_interval == 0
        if not (periodic or ended or first):
            return None
        self.flush_log()
        due = [row for row in rows if not row.done] if periodic else first + ended
        windows = self.decoder.windows((row, row.codec_stream, not row.generating) for row in due)
        if windows:
            self._pending.extend(_Audio(decode) for decode in self.decoder.launch(windows))
        return ended

    def finish_after_audio(self, ended: list[Row]) -> None:
        """These rows left the batch: they finish after the audio launched so far."""
        self._pending.append(_Ending(ended))

    def flush_log(self) -> None:
        """Hand every logged token to its row (stats) and its codes to the row's codec stream.
        Steps with the same rows are stacked, so the Python work is per row, not per step."""
        log, self._log = self._log, []
        i = 0
        while i < len(log):
            first_step, rows = log[i].step, log[i].rows
            j = i + 1
            while j < len(log) and log[j].rows is rows:
                j += 1
            tokens = np.stack([entry.tokens for entry in log[i:j]], axis=1)  # [rows, steps]
            as_lists = tokens.tolist()
            codes = torch.from_numpy(tokens - N_SPECIAL_AUDIO)  # PAD/BOS are never sampled; EOS is never pushed
            for r, row in enumerate(rows):
                if row.done:  # cancelled, failed or dropped
                    continue
                n = j - i if row.end_step is None else min(j - i, row.end_step - first_step + 1)
                if n <= 0:
                    continue
                own = as_lists[r][:n]
                row.handle.stats.tokens.extend(own)
                if own[-1] == EOS:  # only ever its last token
                    n -= 1
                if n:
                    row.codec_stream.push(codes[r, :n])
                    row.frames += n
            i = j

    def hand_out(self, wait: bool = False) -> None:
        """Deliver decoded audio in launch order (all of it if ``wait``; else what is ready) and
        finish the rows whose last audio has gone out."""
        while self._pending:
            head = self._pending[0]
            if not (wait or head.ready()):
                return
            self._pending.popleft()
            head.deliver()

    def fail_all(self, error: BaseException) -> list[Row]:
        """Forget everything in flight; the rows with audio still pending fail with ``error``."""
        rows = [row for item in self._pending for row in item.rows()]
        Row.finish_all(rows, error)
        self._log.clear()
        self._milestones.clear()
        self._pending.clear()
        self.decoder.drop_pending()
        return rows
