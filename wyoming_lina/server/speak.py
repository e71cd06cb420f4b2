"""``wyoming-lina speak``: one text to a 24 kHz 16-bit mono WAV file (or stdout)."""

from __future__ import annotations

import io
import sys
import wave
from pathlib import Path

import numpy as np

from ..engine.synthesizer import Synthesizer


async def synthesize_all(synthesizer: Synthesizer, text: str, voice: str | None = None) -> np.ndarray:
    """All int16 samples of ``text`` (sentences in order, pauses between them)."""
    chunks = [chunk async for chunk in synthesizer.synthesize(text, voice)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(samples.astype("<i2", copy=False).tobytes())
    return buffer.getvalue()


def write_wav(output: str, samples: np.ndarray, sample_rate: int) -> None:
    """``output`` is a path, or ``-`` for stdout (binary)."""
    data = wav_bytes(samples, sample_rate)
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = Path(output)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
