"""Audio as Wyoming ``audio-start`` / ``audio-chunk`` frames, a whole delivery in one write.

Sending each chunk through ``write_event`` costs two JSON encodings, three writes and a ``drain``
per ``--samples-per-chunk`` samples. At hundreds of times real time that was most of the event
loop's work, and every microsecond of it holds the GIL that the engine thread needs to keep the
GPU fed. Frames of one chunk size differ only in their payload, so the part before the payload
is serialized once per size, by wyoming's own ``write_event`` (the bytes on the wire are exactly
what it sends), and the audio of one delivery becomes one ``bytes`` for one write.
"""

from __future__ import annotations

import functools
import io

from wyoming.audio import AudioChunk, AudioStart
from wyoming.event import Event, write_event

_KEPT_SIZES = 8  # chunk sizes whose frame head is kept (the full size and a few last pieces)


def serialize(event: Event) -> bytes:
    """The bytes wyoming's ``write_event`` writes for ``event``."""
    buffer = io.BytesIO()
    write_event(event, buffer)
    return buffer.getvalue()


class AudioFrames:
    """Frames of 16-bit audio at one rate/width/channels, cut in chunks of ``samples_per_chunk``."""

    def __init__(self, rate: int, width: int, channels: int, samples_per_chunk: int):
        if min(rate, width, channels, samples_per_chunk) < 1:
            raise ValueError("rate, width, channels and samples_per_chunk must be positive")
        self.rate, self.width, self.channels = rate, width, channels
        self.chunk_bytes = samples_per_chunk * width * channels
        self.start = serialize(AudioStart(rate=rate, width=width, channels=channels).event())
        self._heads: dict[int, bytes] = {}

    def head(self, length: int) -> bytes:
        """Header line and data block of an ``audio-chunk`` whose payload has ``length`` bytes."""
        head = self._heads.get(length)
        if head is None:
            if length < 1:
                raise ValueError("an audio-chunk carries at least one byte")
            chunk = AudioChunk(rate=self.rate, width=self.width, channels=self.channels, audio=bytes(length))
            head = serialize(chunk.event())[:-length]
            if len(self._heads) < _KEPT_SIZES:
                self._heads[length] = head
        return head

    def chunks(self, audio: bytes) -> bytes:
        """``audio-chunk`` frames carrying all of ``audio``: full chunks, then the rest (if any)."""
        size = self.chunk_bytes
        parts = []
        for at in range(0, len(audio), size):
            piece = audio[at : at + size]
            parts += (self.head(len(piece)), piece)
        return b"".join(parts)


@functools.lru_cache(maxsize=4)
def audio_frames(rate: int, width: int, channels: int, samples_per_chunk: int) -> AudioFrames:
    """The ``AudioFrames`` for a format, made once (every connection of a server shares it)."""
    return AudioFrames(rate, width, channels, samples_per_chunk)
