"""Speech-to-text through the user's own Wyoming ASR server (wyoming-faster-whisper and the like).

A household that runs Home Assistant's voice pipeline already has one, so transcripts of
voice clips come from there instead of being typed: the ordinary Wyoming exchange that Home
Assistant itself uses (``transcribe``, ``audio-start``, ``audio-chunk``*, ``audio-stop``, then
read ``transcript``), one connection per clip. Audio is sent as 16 kHz 16-bit mono, the format
every Wyoming ASR server takes. Errors are ``TranscriptionError`` with a sentence for the user.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

import numpy as np
import soxr
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient
from wyoming.error import Error

from ..errors import LinaError

_LOGGER = logging.getLogger(__name__)
ASR_RATE = 16000
CHUNK_SAMPLES = 1600  # 100 ms per audio-chunk


class TranscriptionError(LinaError):
    """Speech-to-text failed: no server configured, unreachable, or it heard nothing."""

    code = "transcription-failed"


class NoTranscriberError(TranscriptionError):
    code = "no-speech-to-text"

    def __init__(self) -> None:
        super().__init__(
            "no speech-to-text server is configured, so the transcript cannot be filled in: type it, "
            "or start the server with --asr-uri tcp://HOST:PORT (your Wyoming speech-to-text, e.g. faster-whisper)"
        )


def asr_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot name a Wyoming ASR server (None when it can)."""
    parsed = urlparse(uri)
    if parsed.scheme == "tcp":
        try:
            port = parsed.port
        except ValueError:
            port = None
        return None if parsed.hostname and port else "must be tcp://HOST:PORT"
    if parsed.scheme == "unix":
        return None if parsed.path else "must be unix://PATH"
    return "must be tcp://HOST:PORT or unix://PATH"


def to_asr_pcm(samples: np.ndarray, rate: int) -> bytes:
    """float32 mono at ``rate`` -> 16 kHz 16-bit little-endian PCM."""
    audio = np.asarray(samples, dtype=np.float32)
    if rate != ASR_RATE:
        audio = soxr.resample(audio, rate, ASR_RATE)
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class WyomingTranscriber:
    """Transcribes clips through a Wyoming ASR server at ``uri``.

    ``timeout`` bounds one clip: connecting, sending and waiting for the transcript (plus one
    second per ten seconds of audio, for slow servers on long clips)."""

    def __init__(self, uri: str, *, timeout: float = 60.0, connect_timeout: float = 5.0):
        problem = asr_uri_problem(uri)
        if problem:
            raise TranscriptionError(f"speech-to-text address {uri!r} {problem}")
        self.uri = uri
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    async def transcribe(self, samples: np.ndarray, rate: int, language: str | None = None) -> str:
        """The words said in ``samples`` (float32 mono); '' when the server heard none."""
        pcm = to_asr_pcm(samples, rate)
        seconds = len(pcm) / 2 / ASR_RATE
        limit = self.timeout + seconds / 10
        try:
            text = await asyncio.wait_for(self._exchange(pcm, language), limit)
        except asyncio.TimeoutError as err:
            raise TranscriptionError(
                f"the speech-to-text server at {self.uri} did not answer within {limit:.0f} s"
            ) from err
        except (OSError, asyncio.IncompleteReadError) as err:
            raise TranscriptionError(
                f"cannot reach the speech-to-text server at {self.uri} ({_reason(err)}): is it running, and is "
                "--asr-uri right?"
            ) from err
        _LOGGER.debug("transcribed %.1f s of audio: %r", seconds, text)
        return text

    def transcribe_sync(self, samples: np.ndarray, rate: int, language: str | None = None) -> str:
        """``transcribe`` for code that runs no event loop (the ``voice`` commands)."""
        return asyncio.run(self.transcribe(samples, rate, language))

    async def _exchange(self, pcm: bytes, language: str | None) -> str:
        client = AsyncClient.from_uri(self.uri)
        try:
            await asyncio.wait_for(client.connect(), self.connect_timeout)
        except asyncio.TimeoutError as err:
            raise OSError(f"no connection within {self.connect_timeout:g} s") from err
        try:
            await client.write_event(Transcribe(language=language).event())
            await client.write_event(AudioStart(rate=ASR_RATE, width=2, channels=1).event())
            step = CHUNK_SAMPLES * 2
            for start in range(0, len(pcm), step):
                chunk = AudioChunk(rate=ASR_RATE, width=2, channels=1, audio=pcm[start : start + step])
                await client.write_event(chunk.event())
            await client.write_event(AudioStop().event())
            while True:
                event = await client.read_event()
                if event is None:
                    raise ConnectionResetError("the server closed the connection without a transcript")
                if Transcript.is_type(event.type):
                    return " ".join(Transcript.from_event(event).text.split())
                if Error.is_type(event.type):
                    error = Error.from_event(event)
                    raise TranscriptionError(f"the speech-to-text server at {self.uri} failed: {error.text}")
        finally:
            await client.disconnect()


def _reason(err: BaseException) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    return str(err) or type(err).__name__
