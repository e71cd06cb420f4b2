"""Audio frames written many at a time must read back, with wyoming's own reader, as exactly the
events ``write_event`` would have sent one by one: Home Assistant parses them with that reader."""

from __future__ import annotations

import asyncio
import io

import pytest
from wyoming.audio import AudioChunk, AudioStart
from wyoming.event import async_read_event, write_event

from wyoming_lina.server.audio_frames import AudioFrames, audio_frames


def read_all(data: bytes):
    async def run():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        events = []
        while (event := await async_read_event(reader)) is not None:
            events.append(event)
        return events

    return asyncio.run(run())


def one_by_one(audio: bytes, samples_per_chunk: int) -> bytes:
    out = io.BytesIO()
    size = samples_per_chunk * 2
    for at in range(0, len(audio), size):
        write_event(AudioChunk(rate=24000, width=2, channels=1, audio=audio[at : at + size]).event(), out)
    return out.getvalue()


@pytest.mark.parametrize("samples", [1, 1023, 1024, 1025, 5 * 1024, 7 * 1024 + 320])
def test_chunks_equal_write_event_one_by_one(samples):
    frames = AudioFrames(24000, 2, 1, 1024)
    audio = bytes(range(256)) * (2 * samples // 256) + bytes(2 * samples % 256)
    assert frames.chunks(audio) == one_by_one(audio, 1024)
    events = read_all(frames.chunks(audio))
    assert {e.type for e in events} == {"audio-chunk"}
    chunks = [AudioChunk.from_event(e) for e in events]
    assert [c.samples for c in chunks] == [1024] * (samples // 1024) + ([samples % 1024] if samples % 1024 else [])
    assert all((c.rate, c.width, c.channels) == (24000, 2, 1) for c in chunks)
    assert b"".join(c.audio for c in chunks) == audio


def test_start_then_chunks_read_as_one_audio_stream():
    frames = audio_frames(24000, 2, 1, 512)
    events = read_all(frames.start + frames.chunks(b"\x01\x02" * 700) + frames.chunks(b"\x03\x04" * 10))
    assert [e.type for e in events] == ["audio-start", "audio-chunk", "audio-chunk", "audio-chunk"]
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    assert [len(e.payload) for e in events[1:]] == [1024, 376, 20]
    assert audio_frames(24000, 2, 1, 512) is frames  # one per format, shared by every connection


def test_no_audio_no_frames_and_bad_sizes_refused():
    frames = AudioFrames(24000, 2, 1, 1024)
    assert frames.chunks(b"") == b""
    with pytest.raises(ValueError):
        AudioFrames(24000, 2, 1, 0)
