"""``wyoming-lina speak``: one text to a 24 kHz 16-bit mono WAV file (or stdout)."""

from __future__ import annotations

import io
import os
import sys
import wave
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..engine.synthesizer import Synthesizer
from ..errors import LinaError


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


class SpeakError(LinaError):
    """``speak`` was asked for something it cannot do (empty text, an output it cannot write)."""

    code = "speak-error"


def check_request(text: str, output: str) -> None:
    """Refuse what would fail only after the model has loaded: nothing to say, or an output
    file that cannot be written (its folder missing or read-only, or a folder in its place)."""
    if not text.strip():
        raise SpeakError("nothing to say: the text is empty")
    if output == "-":
        return
    path = Path(output)
    folder = path.parent
    if path.is_dir():
        raise SpeakError(f"cannot write {output}: it is a folder")
    if not folder.is_dir():
        raise SpeakError(f"cannot write {output}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SpeakError(f"cannot write {output}: permission denied")


def write_wav(output: str, samples: np.ndarray, sample_rate: int) -> None:
    """``output`` is a path (written atomically), or ``-`` for stdout (binary)."""
    data = wav_bytes(samples, sample_rate)
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        atomic_write_bytes(output, data)
    except OSError as err:
        raise SpeakError(f"cannot write {output}: {err.strerror or err}") from None
