"""A real, small Wyoming speech-to-text server for the tests: pocketsphinx with the English
model its wheel ships (offline, CPU). It stands in for the user's wyoming-faster-whisper.

    python tests/asr_server.py --uri tcp://127.0.0.1:10300

It answers ``describe`` with an ASR program and ``transcribe`` + audio events with a
``transcript``, resampling whatever rate it gets to pocketsphinx's 16 kHz.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from functools import partial

import numpy as np
import soxr
from pocketsphinx import Decoder
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
from wyoming.server import AsyncEventHandler, AsyncServer

_LOGGER = logging.getLogger("asr_server")
RATE = 16000


def _info() -> Info:
    attribution = Attribution(name="CMU Sphinx", url="https://github.com/cmusphinx/pocketsphinx")
    model = AsrModel(
        name="en-us", attribution=attribution, installed=True, description="pocketsphinx", version="5", languages=["en"]
    )
    program = AsrProgram(
        name="pocketsphinx",
        attribution=attribution,
        installed=True,
        description="test ASR",
        version="5",
        models=[model],
    )
    return Info(asr=[program])


class SphinxHandler(AsyncEventHandler):
    def __init__(self, *args, lock: asyncio.Lock, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock = lock
        self.rate = RATE
        self.audio = bytearray()

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(_info().event())
        elif Transcribe.is_type(event.type):
            self.audio.clear()
        elif AudioStart.is_type(event.type):
            self.rate = AudioStart.from_event(event).rate
            self.audio.clear()
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            if chunk.width != 2 or chunk.channels != 1:
                raise ValueError("this test server takes 16-bit mono audio")
            self.audio.extend(chunk.audio)
        elif AudioStop.is_type(event.type):
            samples = np.frombuffer(bytes(self.audio), dtype="<i2").astype(np.float32) / 32768.0
            if self.rate != RATE:
                samples = soxr.resample(samples, self.rate, RATE)
            pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
            async with self.lock:
                text = await asyncio.to_thread(self._decode, pcm)
            _LOGGER.info("%.1f s -> %r", len(pcm) / 2 / RATE, text)
            await self.write_event(Transcript(text=text).event())
            return False
        return True

    @staticmethod
    def _decode(pcm: bytes) -> str:
        # a new decoder per clip: one that is reused adapts to the clips before, so the same
        # clip would not always give the same words
        decoder = Decoder(samprate=RATE, loglevel="FATAL")
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    Decoder(samprate=RATE, loglevel="FATAL")  # the model loads (and fails) before "ready"
    server = AsyncServer.from_uri(args.uri)
    await server.start(partial(SphinxHandler, lock=asyncio.Lock()))
    _LOGGER.info("ready")
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main())
