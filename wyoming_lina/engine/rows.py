"""One request's life inside the engine, in one place.

    WAITING --admitted--> GENERATING --EOS or frame limit--> DRAINING --last audio out--> DONE
       |                      |                                  |
       +-- cancelled, overdue, failed, out of memory, shutting down (finish(error)) --> DONE

A ``Row`` is made when a job is submitted and moves forward only: the scheduler admits it, the
output processor ends it and finishes it once its last audio is handed out, and any failure
finishes it at once. The caller sees only the row's ``JobHandle``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..codec import CodecStream
from .job import GenerationJob, JobHandle


class Phase(enum.Enum):
    WAITING = "waiting"  # submitted, not in the batch yet
    GENERATING = "generating"  # in the batch: every step samples its next frame
    DRAINING = "draining"  # generation ended (EOS or its frame limit); its last audio is decoding
    DONE = "done"  # the caller was told the end (after all its audio) or the error


@dataclass(eq=False)
class Row:
    handle: JobHandle
    phase: Phase = Phase.WAITING
    seed: int = 0  # sampling seed (the job's, or drawn at admission)
    codec_stream: CodecStream | None = None  # its codec window bookkeeping (from admission)
    first_step: int = 0  # the engine step that samples its first token
    end_step: int | None = None  # the step that sampled its last token
    frames: int = 0  # codes handed to its codec stream so far

    @property
    def job(self) -> GenerationJob:
        return self.handle.job

    @property
    def generating(self) -> bool:
        return self.phase is Phase.GENERATING

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    def admit(self, seed: int, codec_stream: CodecStream, first_step: int) -> None:
        """WAITING -> GENERATING: it joins the batch; its first token is sampled at ``first_step``."""
        assert self.phase is Phase.WAITING, self.phase
        self.phase, self.seed, self.codec_stream, self.first_step = Phase.GENERATING, seed, codec_stream, first_step

    def end(self, step: int, reason: str) -> None:
        """GENERATING -> DRAINING: ``step`` sampled its last token (``reason``: eos, max_frames)."""
        assert self.phase is Phase.GENERATING, self.phase
        self.phase, self.end_step = Phase.DRAINING, step
        self.handle.stats.stop_reason = reason

    def finish(self, error: BaseException | None = None) -> None:
        """-> DONE: the caller hears the end (after all its audio) or ``error``."""
        if self.phase is Phase.DONE:
            return
        self.phase = Phase.DONE
        self.handle.stats.frames = self.frames
        self.handle.finish(error)

    @staticmethod
    def finish_all(rows: list[Row], error: BaseException | None = None) -> None:
        """``finish(error)`` for many rows; their callers hear it with one wake-up per event loop."""
        endings = []
        for row in rows:
            if row.phase is not Phase.DONE:
                row.phase = Phase.DONE
                row.handle.stats.frames = row.frames
                endings.append((row.handle, error))
        JobHandle.finish_many(endings)

    def frame_count(self, step: int) -> int:
        """Frames this row has at ``step`` (its first token is frame 1)."""
        return step - self.first_step + 1
