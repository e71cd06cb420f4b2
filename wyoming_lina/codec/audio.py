"""Reading voice clips and bringing them to what the codec eats: 24 kHz mono float32.

Users hand us whatever their phone or Home Assistant recorded: any sample rate, stereo,
integer PCM, very short clips, silence. Conversion is: integer PCM scaled to [-1, 1],
channel mean, ``soxr`` resampling (high quality) to 24 kHz. No loudness normalisation
(upstream does none at inference). Files that cannot be read or hold no audio raise
``AudioFileError`` with a message meant for the user.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr

from ..defaults import SAMPLE_RATE
from ..errors import AudioFileError

CODEC_RATE = SAMPLE_RATE  # what the codec encodes and decodes
MAX_CHANNELS = 64  # more "channels" than this means the array is (channels, frames)


def read_audio(path: str | Path, mono: bool = True) -> tuple[np.ndarray, int]:
    """(float32 samples, sample rate): shape (N,) if ``mono`` (channel mean) else (N, C)."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file not found: {path}")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise AudioFileError(f"cannot read audio file {path.name}: {err}") from err
    if data.shape[0] == 0:
        raise AudioFileError(f"audio file {path.name} contains no audio")
    if not np.isfinite(data).all():
        raise AudioFileError(f"audio file {path.name} contains NaN or infinite samples")
    return (data.mean(axis=1) if mono else data).astype(np.float32, copy=False), int(rate)


def pcm_to_float(samples: np.ndarray) -> np.ndarray:
    """Integer PCM scaled to [-1, 1) (uint8 is offset binary); floats become float32 unchanged."""
    samples = np.asarray(samples)
    kind = samples.dtype.kind
    if kind == "f":
        return samples.astype(np.float32, copy=False)
    if kind == "u":
        half = 2.0 ** (8 * samples.dtype.itemsize - 1)
        return ((samples.astype(np.float64) - half) / half).astype(np.float32)
    if kind == "i":
        return (samples.astype(np.float64) / 2.0 ** (8 * samples.dtype.itemsize - 1)).astype(np.float32)
    raise AudioFileError(f"unsupported sample type {samples.dtype}")


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) frames-first (soundfile layout) -> (N,) channel mean."""
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2 or samples.shape[1] > MAX_CHANNELS:
        raise AudioFileError(f"audio must be (frames,) or (frames, channels), got shape {tuple(samples.shape)}")
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def to_codec_rate(samples: np.ndarray, sample_rate: int, target_rate: int = CODEC_RATE) -> np.ndarray:
    """Any PCM clip -> float32 mono at ``target_rate`` (24 kHz)."""
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioFileError(f"invalid sample rate {sample_rate!r}")
    mono = to_mono(pcm_to_float(samples))
    if mono.shape[0] == 0:
        raise AudioFileError("the audio clip is empty")
    if not np.isfinite(mono).all():
        raise AudioFileError("the audio clip contains NaN or infinite samples")
    if sample_rate != target_rate:
        mono = soxr.resample(mono, int(sample_rate), target_rate, quality="HQ").astype(np.float32, copy=False)
    if mono.shape[0] == 0:
        raise AudioFileError(f"the audio clip is too short ({samples.shape[0]} samples at {sample_rate} Hz)")
    return np.ascontiguousarray(mono)
