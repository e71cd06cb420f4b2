"""Training pairs from long recordings: split at pauses, transcribe each piece, keep the good ones.

``prepare_pieces`` turns recordings into the folder of ``piece.wav`` + ``piece.txt`` pairs that
``voice tune`` reads (``tuning/pieces/`` in the voice's folder). Pieces that would teach the
voice something wrong are dropped and counted: too short, clipped (distortion is imitated),
nothing heard by speech-to-text, or a transcript that cannot belong to the piece (far too
few letters for its length: speech-to-text heard only part of it).

Every decision is written down as it is made (``<recording sha>.json`` beside the pieces),
so an interrupted run (a restart of the server, Ctrl-C) does not transcribe again what it
already did. The transcriber is passed in (``transcribe(samples, rate) -> text``): the voice
package knows nothing of Wyoming.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import LinaError, VoiceError
from .clips import PROMPT_LIMITS, ClipLimits, check_file, clipped_fraction, write_clip
from .files import STATE_FILE, TUNING_DIR, atomic_write_text, sha256_file
from .names import name_key
from .splitting import SplitSettings, read_span, split_recording

_LOGGER = logging.getLogger(__name__)
PIECES_DIR = "pieces"
MIN_PIECE_SECONDS = 1.0
MIN_LETTERS_PER_SECOND = 2.5  # under this the transcript misses most of what is said
# What a recording may be: checked on the file's header, before anything is decoded.
RECORDING_LIMITS = replace(PROMPT_LIMITS, max_seconds=30 * 60.0, max_file_seconds=30 * 60.0, max_file_bytes=512 << 20)

Transcribe = Callable[[np.ndarray, int], str]
Progress = Callable[[str, float, str], None]  # (phase, fraction of the phase, message)


@dataclass
class PiecesReport:
    recordings: int = 0
    seconds: float = 0.0  # of all recordings
    kept: int = 0
    kept_seconds: float = 0.0
    dropped: Counter = field(default_factory=Counter)  # reason -> count

    def summary(self) -> str:
        text = (
            f"{self.kept} pieces ({self.kept_seconds / 60:.1f} min) kept from {self.recordings} recording(s) "
            f"of {self.seconds / 60:.1f} min"
        )
        if self.dropped:
            text += "; dropped: " + ", ".join(f"{n} {reason}" for reason, n in self.dropped.most_common())
        return text


def check_recording(path: Path, limits: ClipLimits = RECORDING_LIMITS) -> None:
    """Refuse a recording that is too large or too long, from its header (nothing decoded)."""
    check_file(path, limits)


def prepare_pieces(
    recordings: list[Path],
    out_dir: Path,
    transcribe: Transcribe,
    *,
    settings: SplitSettings = SplitSettings(),
    on_progress: Progress | None = None,
) -> PiecesReport:
    """Split and transcribe ``recordings`` into pairs in ``out_dir``; resumes what was started."""
    for path in recordings:
        check_recording(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PiecesReport(recordings=len(recordings))
    for number, path in enumerate(recordings):

        def progress(fraction: float, message: str, number=number) -> None:
            if on_progress is not None:
                on_progress("transcribing", (number + fraction) / len(recordings), message)

        progress(0.0, f"finding the pauses in {path.name}")
        spans, rate, duration = split_recording(path, settings)
        report.seconds += duration
        digest = sha256_file(path)[:16]
        manifest_path = out_dir / f"{digest}.json"
        decisions = _read_manifest(manifest_path)
        for index, span in enumerate(spans):
            key = f"{index:04d}"
            decision = decisions.get(key)
            if decision is None or decision.get("span") != [span.start, span.end]:
                decision = _decide(path, span, rate, transcribe, out_dir / f"{digest}-{key}")
                decisions[key] = decision
                atomic_write_text(manifest_path, json.dumps(decisions, indent=1))
            if "dropped" in decision:
                report.dropped[decision["dropped"]] += 1
            else:
                report.kept += 1
                report.kept_seconds += span.seconds
            progress((index + 1) / max(1, len(spans)), f"transcribed {index + 1} of {len(spans)} pieces of {path.name}")
    _LOGGER.info("recordings: %s", report.summary())
    if not report.kept:
        raise VoiceError(f"no usable speech was found in the recordings: {report.summary()}")
    return report


def _decide(path: Path, span, rate: int, transcribe: Transcribe, stem: Path) -> dict:
    """Keep (write the pair) or drop one piece; the record that goes into the manifest."""
    record: dict = {"span": [span.start, span.end]}
    if span.seconds < MIN_PIECE_SECONDS:
        return {**record, "dropped": "too short"}
    samples = read_span(path, span, rate)
    if clipped_fraction(samples) > PROMPT_LIMITS.clipping_fraction:
        return {**record, "dropped": "clipped"}
    text = " ".join(transcribe(samples, rate).split())
    letters = sum(ch.isalpha() for ch in text)
    if not letters:
        return {**record, "dropped": "no words heard"}
    if letters / span.seconds < MIN_LETTERS_PER_SECOND:
        return {**record, "dropped": "transcript too short for the audio", "text": text}
    write_clip(stem.with_suffix(".wav"), samples, rate)
    atomic_write_text(stem.with_suffix(".txt"), text + "\n")
    return {**record, "text": text}


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pieces_folder(store, name: str) -> Path:
    """Where the pieces of ``name``'s recordings go (creates the voice's folder, as tuning does)."""
    return store.folder_for_new_state(name) / TUNING_DIR / PIECES_DIR


def discard_tuning(store, name: str, *, remove_voice: bool) -> None:
    """Forget an unfinished tuning: the whole voice when it was made for it, else its tuning/ only.

    A voice that existed before keeps its clip and any earlier state: nothing it had is lost."""
    try:
        entry = store.entry(name)
    except LinaError:
        return
    if entry.folder is None:
        return
    if remove_voice:
        store.remove(entry.name)
    else:
        shutil.rmtree(entry.folder / TUNING_DIR, ignore_errors=True)


def unfinished(store, name: str) -> bool:
    """A folder for ``name`` exists but holds no finished voice (only tuning work files)."""
    try:
        entry = store.entry(name)
    except LinaError:
        return False
    return entry.folder is not None and not (entry.folder / STATE_FILE).is_file() and not entry.has_prompt


def existing_voice(store, name: str) -> bool:
    """``name`` is a voice already (in any case), not just an unfinished tuning."""
    return any(name_key(i.name) == name_key(name) for i in store.list()) and not unfinished(store, name)


def checkpoint_file(store, name: str) -> Path:
    """Where ``voice tune`` keeps ``name``'s checkpoint (it may not exist)."""
    from .tuning import CHECKPOINT_FILE

    try:
        folder = store.entry(name).folder
    except LinaError:
        folder = None
    return (folder or store.voices_dir / name) / TUNING_DIR / CHECKPOINT_FILE
