"""Text + voice name in, ordered 16-bit PCM out: the one entry point the server uses.

A request's text becomes a ``SynthesisStream`` (text_stream.py): sentences cut as the text
arrives, normalised, tokenised and generated a window at a time, audio in order. Here: which
voice, and how one normalised piece becomes a job: its token ids (with a prompt voice's
transcript in front) and its length bounds from its characters and the voice's speaking rate
(``engine.lengths``). A piece that still yields less than its floor (the engine failed it) is
tried once more with the next seed (``retry_job``), then the request fails with ``NoAudioError``:
a voice assistant must never answer with silence and no error.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..defaults import MAX_SENTENCE_CHARS
from ..text import LinaTokenizer, normalize_text, prepare_sentence
from ..voices.voice import Voice, VoiceInfo
from .job import GenerationJob, JobHandle
from .lengths import FRAMES_PER_SECOND, frame_bounds, speaking_rate, spoken_chars
from .loop import Engine
from .sampling import SamplingOptions
from .text_stream import SynthesisStream

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
    # the first sentence generates alone until its first audio (a CPU: text_stream.py)
    first_audio_alone: bool = False
    deadline: float | None = 120.0  # seconds per sentence job from submission
    sampling: SamplingOptions = SamplingOptions()


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
    ) -> SynthesisStream:
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

    def jobs_for(
        self, sentence: str, voice: Voice, sampling: SamplingOptions, owner: object = None
    ) -> list[GenerationJob]:
        """Normalise one sentence into speakable pieces, one job each ([] if nothing is left)."""
        pieces = prepare_sentence(sentence, self.tokenizer, self.settings.max_sentence_chars)
        return [self.job_for(p, voice, sampling, owner) for p in pieces if p.strip(" .,;:!?-'\"")]

    def job_for(self, spoken: str, voice: Voice, sampling: SamplingOptions, owner: object = None) -> GenerationJob:
        """Tokenise one normalised piece (with the voice's prompt transcript in front) and bound
        its length by its characters and the voice's speaking rate."""
        prompt_text, rate = self._prompt_text_and_rate(voice)  # (normalised: only sayable characters)
        ids = self.tokenizer.encode(
            f"{prompt_text} {spoken}" if prompt_text else spoken
        )  # an error names what the piece cannot say
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
        return dataclasses.replace(
            job, sampling=dataclasses.replace(job.sampling, seed=None if seed is None else seed + 1)
        )

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
