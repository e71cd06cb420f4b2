"""One request's text, whole or in fragments, turned into its audio in order.

Sentences are cut from the text as it arrives (``SentenceChunker``). Each is normalised and
tokenised only when a generation slot is free: at most ``max_sentences_ahead`` generate at once,
the next one is submitted when one has played. So a long text (an 8,000-character request of
2,000 sentences) neither fills the engine's queue nor holds the event loop while all of it is
normalised, and its audio still comes strictly in order, with a pause between sentences.

With ``first_audio_alone`` (on a CPU) the first piece generates alone until its first audio is
out, then the others join it. A CPU step for two rows costs ~1.3x one row's, so a two-sentence
request's first audio came ~30% later than its first sentence alone would give it (2-core Xeon,
state voice: 1.29 s against ~0.9 s); generating the later sentences in parallel afterwards keeps
most of what parallel sentences buy a CPU (two rows for 1.3x the time of one).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import NoAudioError, SynthesisError, TextTooLongError, UnsupportedTextError
from ..text import SentenceChunker, has_content, name_characters
from .job import GenerationJob, JobHandle
from .sampling import SamplingOptions

if TYPE_CHECKING:
    from ..voices.voice import Voice
    from .synthesizer import Synthesizer

_LOGGER = logging.getLogger(__name__)


def to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


@dataclass(eq=False)
class _Piece:
    """A speakable piece of a sentence: its job, and its handle once submitted."""

    job: GenerationJob
    handle: JobHandle | None = None


class SynthesisStream:
    """``add_text`` (any number of times) then ``finish``; iterate for int16 chunks; ``cancel``
    frees its rows. ``owner`` identifies the client to the engine's fair admission (default:
    this request)."""

    def __init__(self, synth: Synthesizer, voice: Voice, sampling: SamplingOptions, owner: object = None):
        self.synth = synth
        self.voice = voice
        self.sampling = sampling
        self.owner = owner if owner is not None else self
        self.chunker = SentenceChunker(max_chars=synth.settings.max_sentence_chars)
        self.chars = 0
        self.sentences = 0  # sentences cut from the text so far
        self._content = False  # the text had something besides spaces and punctuation
        self._seen: list[str] = []  # (its first characters, to name what could not be said)
        self._sentences: collections.deque[str] = collections.deque()  # not normalised yet
        self._waiting: collections.deque[_Piece] = collections.deque()  # normalised, not submitted
        self._queue: asyncio.Queue[_Piece | None] = asyncio.Queue()  # pieces in order, for the player
        self._generating = 0  # submitted and not yet played out
        self._spoken = 0  # pieces made from the text
        self._all: list[JobHandle] = []
        self._finished = False  # finish() was called: the text is complete
        self._ended = False  # the player's end marker is queued
        self._cancelled = False
        self._heard = not synth.settings.first_audio_alone  # (first_audio_alone: until the first audio)

    def add_text(self, text: str) -> None:
        self.chars += len(text)
        limit = self.synth.settings.max_text_chars
        if self.chars > limit:
            raise TextTooLongError(f"text is longer than the limit of {limit} characters")
        if not self._content and has_content(text):
            self._content = True
        if len(self._seen) < 200:
            self._seen.append(text[:200])
        self._cut(self.chunker.add(text))

    def finish(self) -> None:
        """The text is complete: its last sentence is queued."""
        if not self._finished:
            self._finished = True
            self._cut(self.chunker.finish())

    def _cut(self, sentences) -> None:
        for sentence in sentences:
            self._sentences.append(sentence)
            self.sentences += 1
        self._submit_ahead()

    def _submit_ahead(self) -> None:
        """Normalise and submit sentences while fewer than ``max_sentences_ahead`` generate; queue
        the player's end once the text is complete and every piece of it is queued."""
        window = self.synth.settings.max_sentences_ahead if self._heard else 1
        while not self._cancelled and self._generating < window:
            if not self._waiting:
                if not self._sentences:
                    break
                self._normalise(self._sentences.popleft())
                continue
            piece = self._waiting.popleft()
            piece.handle = self._start(piece.job)
            self._generating += 1
        if self._finished and not (self._sentences or self._waiting or self._ended):
            self._ended = True
            self._queue.put_nowait(None)

    def _normalise(self, sentence: str) -> None:
        try:
            jobs = self.synth.jobs_for(sentence, self.voice, self.sampling, owner=self.owner)
        except UnsupportedTextError as err:
            _LOGGER.warning("skipping a sentence the model cannot say: %s", err)
            return
        for job in jobs:
            piece = _Piece(job)
            self._spoken += 1
            self._waiting.append(piece)
            self._queue.put_nowait(piece)

    def _start(self, job: GenerationJob) -> JobHandle:
        handle = self.synth.submit(job)
        self._all.append(handle)
        return handle

    def cancel(self) -> None:
        """Drop every row of this stream; iteration ends (nothing more is submitted)."""
        self._cancelled = True
        self._sentences.clear()
        self._waiting.clear()
        for handle in self._all:
            handle.cancel()
        if not self._ended:
            self._ended = self._finished = True
            self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        """int16 chunks in order. UnsupportedTextError when the text had content but none of it can
        be spoken (only other scripts or emoji): an answer of silence is never a success."""
        silence = np.zeros(int(self.synth.settings.sentence_silence * self.synth.sample_rate), dtype=np.int16)
        first = True
        try:
            while (piece := await self._queue.get()) is not None:
                if self._cancelled:
                    break
                if not first and len(silence):
                    yield silence
                first = False
                try:
                    async for samples in self._piece_audio(piece):
                        if not self._heard:  # the first audio is out: the other sentences may start
                            self._heard = True
                            self._submit_ahead()
                        yield samples
                finally:
                    self._generating -= 1
                self._submit_ahead()
            if not self._cancelled and self._content and not self._spoken:
                raise UnsupportedTextError(
                    f"nothing in this text can be spoken; the model cannot say {name_characters(''.join(self._seen))}"
                )
        finally:
            self.cancel()

    async def _piece_audio(self, piece: _Piece) -> AsyncIterator[np.ndarray]:
        """One piece's int16 audio; retried once (next seed) if it yields less than its floor."""
        job, handle = piece.job, piece.handle
        floor = job.min_frames * self.synth.engine.decoder.samples_per_frame
        for attempt in range(2):
            samples, failure = 0, None
            try:
                async for chunk in handle:
                    samples += len(chunk)
                    yield to_int16(chunk)
            except SynthesisError as err:  # the engine failed this row (not a limit or overload)
                failure = err
            if handle.cancelled or (failure is None and samples >= max(floor, 1)):
                return
            reason = f"failed ({failure})" if failure is not None else f"gave {samples} samples (floor {floor})"
            if attempt == 0:
                _LOGGER.warning("a sentence %s; trying it once more with the next seed", reason)
                job = self.synth.retry_job(job)
                handle = self._start(job)
        raise NoAudioError(f"the model produced no audio for a sentence, twice (last attempt {reason})")
