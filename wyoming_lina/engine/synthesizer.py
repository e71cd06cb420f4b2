"""Text + voice name in, ordered 16-bit PCM out: the one entry point the server uses.

Text is split into sentences (also when it arrives in fragments), each sentence normalised,
tokenised and submitted to the engine as its own row as soon as it is complete, so the
sentences of one request generate in parallel; audio is delivered strictly in order with a
short pause between sentences.

Each sentence's length is bounded by its text and the voice's speaking rate
(``engine.lengths``). A sentence that still yields less than its floor (the engine failed it)
is tried once more with the next seed; if that fails too the request fails with
``NoAudioError``: a voice assistant must never answer with silence and no error.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Protocol

import numpy as np

from ..defaults import MAX_SENTENCE_CHARS
from ..errors import NoAudioError, SynthesisError, TextTooLongError, UnsupportedTextError
from ..text import LinaTokenizer, SentenceChunker, has_content, name_characters, normalize_text, prepare_sentence
from ..voices.voice import Voice, VoiceInfo
from .job import GenerationJob, JobHandle
from .lengths import FRAMES_PER_SECOND, frame_bounds, speaking_rate, spoken_chars
from .loop import Engine
from .sampling import SamplingOptions

_LOGGER = logging.getLogger(__name__)


class VoiceSource(Protocol):
    """Voices by name; may also have ``loaded(name) -> Voice | None`` (see ``loaded_voice``)."""

    def get(self, name: str) -> Voice: ...

    def list(self) -> list[VoiceInfo]: ...


@dataclass(frozen=True)
class SynthesisSettings:
    default_voice: str | None = None
    sentence_silence: float = 0.2  # seconds between sentences
    max_text_chars: int = 10_000  # per request (and per stream)
    max_sentence_chars: int = MAX_SENTENCE_CHARS
    max_frames: int = 60 * FRAMES_PER_SECOND  # no sentence longer (--max-sentence-seconds)
    max_sentences_ahead: int = 16  # sentences of one request generating at once (the rest wait their turn)
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
        # per voice object (voices are immutable): its normalised transcript and speaking rate
        self._voice_text: collections.OrderedDict[int, tuple[Voice, str, float | None]] = collections.OrderedDict()

    @property
    def sample_rate(self) -> int:
        return self.engine.decoder.sample_rate

    def resolve_voice(self, name: str | None) -> Voice:
        """The named voice, else the default voice (raises UnknownVoiceError naming the voices)."""
        return self.voices.get(name or self.settings.default_voice or "")

    def loaded_voice(self, name: str | None) -> Voice | None:
        """``resolve_voice(name)`` if the voices can answer without reading a file (a voice loaded
        and unchanged: ``VoiceStore.loaded``), so the event loop may call it; else None: call
        ``resolve_voice`` in a worker thread (it may read files or encode a clip)."""
        loaded = getattr(self.voices, "loaded", None)  # (an optional part of VoiceSource)
        return loaded(name or self.settings.default_voice or "") if loaded is not None else None

    def open_stream(
        self, voice: Voice | str | None = None, sampling: SamplingOptions | None = None, owner: object = None
    ) -> "SynthesisStream":
        """A stream for a voice object (already resolved) or a voice name (None: the default);
        ``owner`` (e.g. the client's connection) for the engine's fair admission."""
        if not isinstance(voice, Voice):
            voice = self.resolve_voice(voice)
        return SynthesisStream(self, voice, sampling or self.settings.sampling, owner)

    async def synthesize(
        self, text: str, voice: str | None = None, sampling: SamplingOptions | None = None, owner: object = None
    ) -> AsyncIterator[np.ndarray]:
        """int16 chunks for the whole text (sentences generated in parallel, played in order)."""
        stream = self.open_stream(voice, sampling, owner)
        try:
            stream.add_text(text)
            stream.finish()
            async for chunk in stream:
                yield chunk
        finally:
            stream.cancel()

    def jobs_for(self, sentence: str, voice: Voice, sampling: SamplingOptions, owner: object = None) -> list[GenerationJob]:
        """Normalise one sentence into speakable pieces, one job each ([] if nothing is left)."""
        pieces = prepare_sentence(sentence, self.tokenizer, self.settings.max_sentence_chars)
        return [self.job_for(p, voice, sampling, owner) for p in pieces if p.strip(" .,;:!?-'\"")]

    def job_for(self, spoken: str, voice: Voice, sampling: SamplingOptions, owner: object = None) -> GenerationJob:
        """Tokenise one normalised piece (with the voice's prompt transcript in front) and bound
        its length by its characters and the voice's speaking rate."""
        prompt_text, rate = self._prompt_text_and_rate(voice)  # (normalised: only sayable characters)
        ids = self.tokenizer.encode(f"{prompt_text} {spoken}" if prompt_text else spoken)  # an error names what the piece cannot say
        bounds = frame_bounds(spoken_chars(spoken), rate, self.settings.max_frames)
        return GenerationJob(
            text_ids=ids,
            max_frames=bounds.max_frames,
            min_frames=bounds.min_frames,
            sampling=sampling,
            prompt_codes=voice.prompt_codes,
            initial_state=voice.initial_state,
            owner=owner,
        )

    def submit(self, job: GenerationJob) -> JobHandle:
        """Hand a job to the engine; its deadline (``--deadline``) counts from now."""
        deadline = time.monotonic() + self.settings.deadline if self.settings.deadline else None
        return self.engine.submit(dataclasses.replace(job, deadline=deadline))

    @staticmethod
    def retry_job(job: GenerationJob) -> GenerationJob:
        """The same utterance once more, with the next seed."""
        seed = job.sampling.seed
        return dataclasses.replace(job, sampling=dataclasses.replace(job.sampling, seed=None if seed is None else seed + 1))

    def _prompt_text_and_rate(self, voice: Voice) -> tuple[str, float | None]:
        """(normalised prompt transcript or "", frames per character or None for the default).
        A rate the voice recorded (tuning measures it over all its clips; the built-in voice
        records the default) wins; else a clip voice's rate is measured on its clip (its frames /
        its transcript's characters)."""
        hit = self._voice_text.get(id(voice))
        if hit is not None and hit[0] is voice:
            return hit[1], hit[2]
        text, rate = "", voice.frames_per_char
        if voice.prompt_text:
            text = normalize_text(voice.prompt_text, self.tokenizer)
            if rate is None:
                rate = speaking_rate(len(voice.prompt_codes), spoken_chars(text))
        self._voice_text[id(voice)] = (voice, text, rate)
        while len(self._voice_text) > 64:
            self._voice_text.popitem(last=False)
        return text, rate


@dataclass(eq=False)
class _Sentence:
    """One piece of the request's text: its job, and its handle once submitted."""

    job: GenerationJob
    handle: JobHandle | None = None


class SynthesisStream:
    """One request's text (whole or in fragments) -> its audio, in order.

    ``add_text`` may be called many times; every completed sentence is queued at once, and up to
    ``max_sentences_ahead`` of them generate in parallel (the next one is submitted when one has
    played): a long text cannot fill the engine's queue, and audio still comes in order.
    ``finish`` queues the rest. Iterate the stream for int16 chunks; ``cancel`` frees rows.
    ``owner`` identifies the client to the engine's fair admission (default: this request).
    """

    def __init__(self, synth: Synthesizer, voice: Voice, sampling: SamplingOptions, owner: object = None):
        self.synth = synth
        self.voice = voice
        self.sampling = sampling
        self.owner = owner if owner is not None else self
        self.chunker = SentenceChunker(max_chars=synth.settings.max_sentence_chars)
        self.chars = 0
        self.sentences = 0
        self._content = False  # the text had something besides spaces and punctuation
        self._seen: list[str] = []  # (its first characters, to name what could not be said)
        self._queue: asyncio.Queue[_Sentence | None] = asyncio.Queue()  # in order, for the player
        self._unsubmitted: collections.deque[_Sentence] = collections.deque()
        self._generating = 0  # submitted and not yet played out
        self._all: list[JobHandle] = []
        self._finished = False
        self._cancelled = False

    def add_text(self, text: str) -> None:
        self.chars += len(text)
        limit = self.synth.settings.max_text_chars
        if self.chars > limit:
            raise TextTooLongError(f"text is longer than the limit of {limit} characters")
        if not self._content and has_content(text):
            self._content = True
        if len(self._seen) < 200:
            self._seen.append(text[:200])
        for sentence in self.chunker.add(text):
            self._add(sentence)

    def finish(self) -> None:
        """Queue the rest of the text. UnsupportedTextError when the text had content but none
        of it can be spoken (only other scripts or emoji): an answer of silence is never a success."""
        if not self._finished:
            self._finished = True
            for sentence in self.chunker.finish():
                self._add(sentence)
            self._queue.put_nowait(None)
            if self._content and not self.sentences:
                raise UnsupportedTextError(
                    f"nothing in this text can be spoken; the model cannot say {name_characters(''.join(self._seen))}"
                )

    def _add(self, sentence: str) -> None:
        try:
            jobs = self.synth.jobs_for(sentence, self.voice, self.sampling, owner=self.owner)
        except UnsupportedTextError as err:
            _LOGGER.warning("skipping a sentence the model cannot say: %s", err)
            return
        for job in jobs:
            item = _Sentence(job)
            self.sentences += 1
            self._unsubmitted.append(item)
            self._queue.put_nowait(item)
        self._submit_ahead()

    def _submit_ahead(self) -> None:
        """Submit queued sentences while fewer than ``max_sentences_ahead`` are generating."""
        while self._unsubmitted and not self._cancelled and self._generating < self.synth.settings.max_sentences_ahead:
            item = self._unsubmitted.popleft()
            item.handle = self._start(item.job)
            self._generating += 1

    def _start(self, job: GenerationJob) -> JobHandle:
        handle = self.synth.submit(job)
        self._all.append(handle)
        return handle

    def cancel(self) -> None:
        """Drop every row of this stream; iteration ends (nothing more is submitted)."""
        self._cancelled = True
        self._unsubmitted.clear()
        for handle in self._all:
            handle.cancel()
        if not self._finished:
            self._finished = True
            self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        silence = np.zeros(int(self.synth.settings.sentence_silence * self.synth.sample_rate), dtype=np.int16)
        first = True
        try:
            while (item := await self._queue.get()) is not None:
                if self._cancelled:
                    break
                if not first and len(silence):
                    yield silence
                first = False
                self._submit_ahead()  # (a sentence queued while the window was full)
                try:
                    async for samples in self._sentence_audio(item):
                        yield samples
                finally:
                    self._generating -= 1
                self._submit_ahead()
        finally:
            self.cancel()

    async def _sentence_audio(self, item: _Sentence) -> AsyncIterator[np.ndarray]:
        """One sentence's int16 audio; retried once (next seed) if it yields less than its floor."""
        job, handle = item.job, item.handle
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
