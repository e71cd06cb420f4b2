"""Checking and cleaning the audio a voice is made from.

A prompt clip is what the model imitates, so its problems become the voice's problems:
leading/trailing silence (the model continues after a pause, or starts with one), clipping
(distortion is imitated), a clip too short to carry a voice or so long it eats the context.
``prepare_clip`` reads any file soundfile can read (any rate, channels, integer or float
PCM, wav/flac/ogg/mp3), refuses what cannot work with a message for the user, collects
warnings for what merely works badly, trims silence and returns 24 kHz mono float32.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from ..atomic import atomic_write_bytes
from ..codec.audio import CODEC_RATE, read_audio, to_codec_rate
from ..errors import AudioFileError


class ClipRejected(AudioFileError):
    """A readable clip that cannot make a voice; ``reason`` is a short label for reports."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ClipLimits:
    """What a clip may be. Durations are seconds of speech after trimming silence."""

    min_seconds: float = 1.0  # refuse below: too little to carry a voice
    warn_short_seconds: float = 3.0
    warn_long_seconds: float = 15.0
    max_seconds: float = 30.0  # refuse above: the prompt would fill the context
    max_file_seconds: float = 120.0  # refuse before decoding files longer than this
    max_file_bytes: int = 64 * 1024 * 1024
    silence_dbfs: float = -60.0  # a clip whose loudest 10 ms frame is below this is silence
    trim_db: float = 40.0  # frames this far below the loudest frame count as silence at the ends
    keep_silence_seconds: float = 0.1  # silence kept before the first and after the last sound
    clipping_fraction: float = 5e-4  # warn when more samples than this sit at full scale


PROMPT_LIMITS = ClipLimits()
# Training clips: anything from half a second; long clips cost memory (the CPU recurrence keeps
# every step for the backward pass), so the tuner caps them itself.
TRAINING_LIMITS = ClipLimits(min_seconds=0.5, warn_short_seconds=0.0, warn_long_seconds=float("inf"), max_seconds=60.0)


@dataclass
class PreparedClip:
    samples: np.ndarray  # float32 mono at CODEC_RATE, silence trimmed
    source_rate: int
    source_channels: int
    source_seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.samples) / CODEC_RATE


def frame_levels_db(samples: np.ndarray, frame: int) -> np.ndarray:
    """RMS level (dBFS) of consecutive ``frame``-sample frames (the last one may be shorter)."""
    n = -(-len(samples) // frame)
    padded = np.zeros(n * frame, dtype=np.float64)
    padded[: len(samples)] = samples
    frames = padded.reshape(n, frame)
    counts = np.full(n, frame, dtype=np.float64)
    counts[-1] = len(samples) - (n - 1) * frame
    rms = np.sqrt((frames**2).sum(axis=1) / counts)
    return 20.0 * np.log10(np.maximum(rms, 1e-10))


def trim_silence(samples: np.ndarray, rate: int, limits: ClipLimits = PROMPT_LIMITS) -> tuple[int, int]:
    """(start, end) sample indices of the clip without its leading/trailing silence.

    Raises AudioFileError when the whole clip is silence."""
    frame = max(1, rate // 100)  # 10 ms
    levels = frame_levels_db(samples, frame)
    loudest = float(levels.max())
    if loudest < limits.silence_dbfs:
        raise ClipRejected(
            f"the clip is silent (loudest level {loudest:.0f} dBFS); record it again closer to the microphone",
            "silent",
        )
    loud = np.flatnonzero(levels >= max(loudest - limits.trim_db, limits.silence_dbfs))
    keep = int(limits.keep_silence_seconds * rate)
    start = max(0, int(loud[0]) * frame - keep)
    end = min(len(samples), (int(loud[-1]) + 1) * frame + keep)
    return start, end


def clipped_fraction(samples: np.ndarray) -> float:
    """Fraction of samples (any channel) at or next to full scale."""
    return float(np.count_nonzero(np.abs(samples) >= 0.999)) / max(1, samples.size)


def check_file(path: Path, limits: ClipLimits) -> None:
    """Refuse files too large or too long before decoding them."""
    if not path.is_file():
        raise AudioFileError(f"audio file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ClipRejected(f"audio file {path.name} is empty", "empty")
    if size > limits.max_file_bytes:
        raise ClipRejected(
            f"audio file {path.name} is {size / 2**20:.0f} MiB; the limit is {limits.max_file_bytes / 2**20:.0f} MiB",
            "too large",
        )
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise AudioFileError(f"cannot read audio file {path.name}: {err}") from err
    if info.frames > 0 and info.samplerate > 0 and info.frames / info.samplerate > limits.max_file_seconds:
        raise ClipRejected(
            f"audio file {path.name} is {info.frames / info.samplerate:.0f} s long; "
            f"use a clip of at most {limits.max_seconds:.0f} s",
            "too long",
        )


def prepare_clip(path: str | Path, limits: ClipLimits = PROMPT_LIMITS, trim: bool = True) -> PreparedClip:
    """Read, check, trim (unless ``trim`` is False) and resample one clip.

    Raises AudioFileError with the reason when the clip cannot make a voice."""
    path = Path(path)
    check_file(path, limits)
    data, rate = read_audio(path, mono=False)  # (N, C) float32 in [-1, 1]
    warnings = []
    clipped = clipped_fraction(data)
    if clipped > limits.clipping_fraction:
        warnings.append(
            f"{clipped * 100:.2f}% of the samples are at full scale: the recording is probably clipped "
            "(distorted), and the voice will copy the distortion; record with less input gain"
        )
    mono = to_codec_rate(data, rate)
    start, end = trim_silence(mono, CODEC_RATE, limits)  # also refuses silence
    if not trim:
        start, end = 0, len(mono)
    clip = PreparedClip(np.ascontiguousarray(mono[start:end]), rate, data.shape[1], data.shape[0] / rate, warnings)
    seconds = clip.seconds
    if seconds < limits.min_seconds:
        raise ClipRejected(
            f"{path.name} holds only {seconds:.1f} s of sound after trimming silence; "
            f"at least {limits.min_seconds:g} s is needed (3 to 15 s works best)",
            "too short",
        )
    if seconds > limits.max_seconds:
        raise ClipRejected(
            f"{path.name} holds {seconds:.1f} s of sound; a voice clip may be at most {limits.max_seconds:g} s "
            "(3 to 15 s works best; for more audio use 'voice tune')",
            "too long",
        )
    if seconds < limits.warn_short_seconds:
        warnings.append(f"the clip is only {seconds:.1f} s long; 3 to 15 s of clear speech imitates a voice better")
    elif seconds > limits.warn_long_seconds:
        warnings.append(
            f"the clip is {seconds:.1f} s long; clips over {limits.warn_long_seconds:.0f} s slow every request "
            "down and leave less room for the text"
        )
    return clip


def speaking_rate_warning(text: str, seconds: float) -> str | None:
    """A warning when the transcript is implausibly long or short for the clip."""
    letters = sum(ch.isalpha() for ch in text)
    rate = letters / max(seconds, 1e-3)
    if rate > 25:
        return (
            f"the transcript has {letters} letters for {seconds:.1f} s of audio ({rate:.0f}/s): is it the "
            "transcript of this clip? It must be exactly what is said in it"
        )
    if seconds >= 2 and rate < 4:
        return (
            f"the transcript has only {letters} letters for {seconds:.1f} s of audio: it must be exactly "
            "everything said in the clip"
        )
    return None


def write_clip(path: str | Path, samples: np.ndarray, rate: int = CODEC_RATE) -> None:
    """Write 16-bit PCM wav (what the voice folder keeps for listening and re-encoding), encoded
    in memory and written atomically: a full disk is an OSError naming the file ("No space left
    on device"), not libsndfile's "System error", and never half a clip."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    atomic_write_bytes(path, buffer.getvalue())
