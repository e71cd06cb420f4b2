"""Text + voice name in, ordered 16-bit PCM out: the one entry point the server uses.

Text is split into sentences (also when it arrives in fragments), each sentence normalised,
tokenised and submitted to the engine as its own row as soon as it is complete, so the
sentences of one request generate in parallel; audio is delivered strictly in order with a
short pause between sentences.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Protocol

import numpy as np

from ..errors import TextTooLongError, UnsupportedTextError
from ..text import LinaTokenizer, SentenceChunker, normalize_text, prepare_sentence
from ..voices.voice import Voice, VoiceInfo
from .job import GenerationJob, JobHandle
from .loop import Engine
from .sampling import SamplingOptions

_LOGGER = logging.getLogger(__name__)


class VoiceSource(Protocol):
    def get(self, name: str) -> Voice: ...

    def list(self) -> list[VoiceInfo]: ...


@dataclass(frozen=True)
class SynthesisSettings:
    default_voice: str | None = None
    sentence_silence: float = 0.2  # seconds between sentences
    max_text_chars: int = 10_000  # per request (and per stream)
    max_sentence_chars: int = 200
    frames_per_token: float = 12.0  # max length guard: frames allowed per text token...
    min_frames: int = 40  # ...plus this many
    max_frames: int = 75 * 60  # and never more than a minute per sentence
    deadline: float | None = 120.0  # seconds per sentence job from submission
    sampling: SamplingOptions = SamplingOptions()


def to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


class Synthesizer:
    def __init__(self, engine: Engine, tokenizer: LinaTokenizer, voices: VoiceSource, settings: SynthesisSettings):
        self.engine = engine
        self.tokenizer = tokenizer
        self.voices = voices
        self.settings = settings

    @property
    def sample_rate(self) -> int:
        return self.engine.decoder.sample_rate

    def resolve_voice(self, name: str | None) -> Voice:
        """The named voice, else the default voice (raises UnknownVoiceError naming the voices)."""
        return self.voices.get(name or self.settings.default_voice or "")

    def open_stream(
        self, voice: Voice | str | None = None, sampling: SamplingOptions | None = None
    ) -> "SynthesisStream":
        """A stream for a voice object (already resolved) or a voice name (None: the default)."""
        if not isinstance(voice, Voice):
            voice = self.resolve_voice(voice)
        return SynthesisStream(self, voice, sampling or self.settings.sampling)

    async def synthesize(
        self, text: str, voice: str | None = None, sampling: SamplingOptions | None = None
    ) -> AsyncIterator[np.ndarray]:
        """int16 chunks for the whole text (sentences generated in parallel, played in order)."""
        stream = self.open_stream(voice, sampling)
        try:
            stream.add_text(text)
            stream.finish()
            async for chunk in stream:
                yield chunk
        finally:
            stream.cancel()

    def jobs_for(self, sentence: str, voice: Voice, sampling: SamplingOptions) -> list[GenerationJob]:
        """Normalise one sentence into speakable pieces, one job each ([] if nothing is left)."""
        pieces = prepare_sentence(sentence, self.tokenizer, self.settings.max_sentence_chars)
        return [self.job_for(p, voice, sampling) for p in pieces if p.strip(" .,;:!?-'\"")]

    def job_for(self, spoken: str, voice: Voice, sampling: SamplingOptions) -> GenerationJob:
        """Tokenise one normalised piece (with the voice's prompt transcript in front)."""
        target = self.tokenizer.encode(spoken)
        text = spoken
        if voice.prompt_text:
            text = normalize_text(voice.prompt_text, self.tokenizer) + " " + spoken
        ids = self.tokenizer.encode(text)
        s = self.settings
        max_frames = min(s.max_frames, int(s.min_frames + s.frames_per_token * len(target)))
        deadline = time.monotonic() + s.deadline if s.deadline else None
        return GenerationJob(
            text_ids=ids,
            max_frames=max_frames,
            sampling=sampling,
            prompt_codes=voice.prompt_codes,
            initial_state=voice.initial_state,
            deadline=deadline,
        )


class SynthesisStream:
    """One request's text (whole or in fragments) -> its audio, in order.

    ``add_text`` may be called many times; every completed sentence is submitted at once.
    ``finish`` submits the rest. Iterate the stream for int16 chunks; ``cancel`` frees rows.
    """

    def __init__(self, synth: Synthesizer, voice: Voice, sampling: SamplingOptions):
        self.synth = synth
        self.voice = voice
        self.sampling = sampling
        self.chunker = SentenceChunker(max_chars=synth.settings.max_sentence_chars)
        self.chars = 0
        self.sentences = 0
        self._handles: asyncio.Queue[JobHandle | None] = asyncio.Queue()
        self._all: list[JobHandle] = []
        self._finished = False

    def add_text(self, text: str) -> None:
        self.chars += len(text)
        limit = self.synth.settings.max_text_chars
        if self.chars > limit:
            raise TextTooLongError(f"text is longer than the limit of {limit} characters")
        for sentence in self.chunker.add(text):
            self._submit(sentence)

    def finish(self) -> None:
        if not self._finished:
            self._finished = True
            for sentence in self.chunker.finish():
                self._submit(sentence)
            self._handles.put_nowait(None)

    def _submit(self, sentence: str) -> None:
        try:
            jobs = self.synth.jobs_for(sentence, self.voice, self.sampling)
        except UnsupportedTextError as err:
            _LOGGER.warning("skipping a sentence the model cannot say: %s", err)
            return
        for job in jobs:
            handle = self.synth.engine.submit(job)
            self.sentences += 1
            self._all.append(handle)
            self._handles.put_nowait(handle)

    def cancel(self) -> None:
        """Drop every row of this stream; iteration ends (nothing more is submitted)."""
        for handle in self._all:
            handle.cancel()
        if not self._finished:
            self._finished = True
            self._handles.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        silence = np.zeros(int(self.synth.settings.sentence_silence * self.synth.sample_rate), dtype=np.int16)
        first = True
        try:
            while (handle := await self._handles.get()) is not None:
                if not first and len(silence):
                    yield silence
                first = False
                async for samples in handle:
                    yield to_int16(samples)
        finally:
            self.cancel()
