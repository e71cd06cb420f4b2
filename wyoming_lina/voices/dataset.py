"""Training data for initial-state tuning: clips of one speaker with their transcripts.

Two layouts are read:

* a folder of pairs ``name.wav`` + ``name.txt`` (also ``.flac``/``.ogg``/``.mp3``; sub-folders
  are searched too), the transcript being exactly what is said in the clip;
* an LJSpeech folder: ``metadata.csv`` with lines ``id|text|normalized text`` and the clips in
  ``wavs/<id>.wav``. The normalised column is used when it is present.

Each clip is read, checked, trimmed (leading/trailing silence) and encoded with the codec;
codes are cached in the voice's ``tuning/`` folder by the clip file's SHA-256 and the codec
fingerprint, so a second run (or ``--resume``) does not encode again. Clips that cannot be
used (unreadable, silent, too long, transcript the model cannot say) are skipped and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..codec.audio import CODEC_RATE
from ..defaults import FRAMES_PER_SECOND
from ..errors import LinaError, VoiceError
from .clips import TRAINING_LIMITS, ClipRejected, prepare_clip
from .files import codec_fingerprint, load_tensors, save_tensors, sha256_file

_LOGGER = logging.getLogger(__name__)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
CLIP_CODES_FILE = "clips.codes.safetensors"
CLIP_CODES_FORMAT = "wyoming-lina-clip-codes/1"


@dataclass(frozen=True)
class DatasetItem:
    id: str
    audio: Path
    text: str


@dataclass
class TuningExample:
    """One training pair: token ids of "[BOS]" + normalised text + "[EOS]", and the clip's codes."""

    id: str
    text_ids: list[int]
    codes: torch.Tensor  # [T] long, 0 <= code < n_codes
    chars: int = 0  # characters of the normalised transcript (engine.lengths.spoken_chars)

    @property
    def frames(self) -> int:
        return int(self.codes.numel())


@dataclass
class DatasetReport:
    found: int = 0
    used: int = 0
    seconds: float = 0.0
    encoded: int = 0  # clips encoded now (the rest came from the cache)
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples_of_skips: list[str] = field(default_factory=list)

    def skip(self, item_id: str, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples_of_skips) < 10:
            self.examples_of_skips.append(f"{item_id}: {reason}")

    def summary(self) -> str:
        text = f"{self.used} of {self.found} clips used, {self.seconds / 60:.1f} min of speech"
        if self.skipped:
            text += "; skipped: " + ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return text


def read_dataset(path: str | Path) -> tuple[list[DatasetItem], list[str]]:
    """The (clip, transcript) pairs in ``path``, and notes about files that were left out."""
    root = Path(path)
    if not root.is_dir():
        raise VoiceError(f"training data folder not found: {root}")
    notes: list[str] = []
    metadata = root / "metadata.csv"
    items = _read_ljspeech(root, metadata, notes) if metadata.is_file() else _read_pairs(root, notes)
    if not items:
        raise VoiceError(
            f"no clips with transcripts found in {root}: expected pairs like clip1.wav + clip1.txt, "
            "or an LJSpeech folder (metadata.csv with id|text|normalized text, clips in wavs/)"
        )
    return items, notes


def _read_ljspeech(root: Path, metadata: Path, notes: list[str]) -> list[DatasetItem]:
    try:
        lines = metadata.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise VoiceError(f"cannot read {metadata}: {err}") from err
    items, seen = [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("|")
        clip_id = parts[0].strip()
        text = parts[2] if len(parts) > 2 and parts[2].strip() else (parts[1] if len(parts) > 1 else "")
        if not clip_id or not text.strip():
            notes.append(f"{metadata.name} line {number}: expected id|text|normalized text")
            continue
        if clip_id in seen:
            notes.append(f"{metadata.name} line {number}: {clip_id} is listed twice")
            continue
        seen.add(clip_id)
        candidates = [root / "wavs" / (clip_id + ext) for ext in AUDIO_EXTENSIONS]
        candidates += [root / (clip_id + ext) for ext in AUDIO_EXTENSIONS]
        audio = next((c for c in candidates if c.is_file()), None)
        if audio is None:
            notes.append(f"{clip_id}: no wavs/{clip_id}.wav")
            continue
        items.append(DatasetItem(clip_id, audio, text.strip()))
    return items


def _read_pairs(root: Path, notes: list[str]) -> list[DatasetItem]:
    items = []
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()):
        transcript = audio.with_suffix(".txt")
        clip_id = audio.relative_to(root).with_suffix("").as_posix()
        if not transcript.is_file():
            notes.append(f"{clip_id}: no transcript {transcript.name}")
            continue
        try:
            text = transcript.read_text(encoding="utf-8-sig").strip()
        except (OSError, UnicodeDecodeError) as err:
            notes.append(f"{clip_id}: cannot read {transcript.name}: {err}")
            continue
        if not text:
            notes.append(f"{clip_id}: {transcript.name} is empty")
            continue
        items.append(DatasetItem(clip_id, audio, " ".join(text.split())))
    return items


def prepare_examples(
    items: list[DatasetItem],
    codec,
    tokenizer,
    cache_path: Path | None = None,
    *,
    max_clip_seconds: float = 20.0,
    min_clip_seconds: float = 0.5,
    max_text_tokens: int | None = None,
    n_codes: int | None = None,
    progress: bool = False,
) -> tuple[list[TuningExample], DatasetReport]:
    """Normalise + tokenise each transcript and encode each clip (cached by SHA-256)."""
    from tqdm import tqdm

    from ..engine.lengths import spoken_chars
    from ..text import normalize_text

    limits = replace(TRAINING_LIMITS, min_seconds=min_clip_seconds, max_seconds=max_clip_seconds)
    fingerprint = codec_fingerprint(codec)
    cache = _read_cache(cache_path, fingerprint)
    dirty = 0
    report = DatasetReport(found=len(items))
    examples = []
    for item in tqdm(items, desc="encoding clips", unit="clip", disable=not progress):
        try:
            spoken = normalize_text(item.text, tokenizer)
            text_ids = tokenizer.encode(spoken)
        except LinaError as err:
            report.skip(item.id, f"transcript not sayable ({err})")
            continue
        if len(text_ids) <= 2:
            report.skip(item.id, "empty transcript")
            continue
        if max_text_tokens is not None and len(text_ids) > max_text_tokens:
            report.skip(item.id, "transcript too long")
            continue
        try:
            digest = sha256_file(item.audio)
        except OSError as err:
            report.skip(item.id, f"unreadable ({err})")
            continue
        codes = cache.get(digest)
        if codes is None:
            try:
                clip = prepare_clip(item.audio, limits)
            except LinaError as err:
                report.skip(item.id, _reason(err))
                continue
            codes = codec.encode_clip(clip.samples, CODEC_RATE).long().reshape(-1).cpu()
            cache[digest] = codes
            report.encoded += 1
            dirty += 1
            if cache_path is not None and dirty >= 50:  # survive an interruption of a long encode
                _write_cache(cache_path, cache, fingerprint)
                dirty = 0
        if n_codes is not None and codes.numel() and int(codes.max()) >= n_codes:
            report.skip(item.id, "codes outside the model's vocabulary (codec and model do not match)")
            continue
        examples.append(TuningExample(item.id, text_ids, codes, spoken_chars(spoken)))
        report.used += 1
        report.seconds += codes.numel() / FRAMES_PER_SECOND
    if cache_path is not None and dirty:
        _write_cache(cache_path, cache, fingerprint)
    return examples, report


def _reason(err: LinaError) -> str:
    return err.reason if isinstance(err, ClipRejected) else "unreadable audio"


def _read_cache(path: Path | None, fingerprint: str) -> dict[str, torch.Tensor]:
    if path is None or not path.is_file():
        return {}
    try:
        tensors, meta = load_tensors(path)
    except VoiceError as err:
        _LOGGER.warning("ignoring the clip code cache: %s", err)
        return {}
    if meta.get("format") != CLIP_CODES_FORMAT or meta.get("codec") != fingerprint:
        _LOGGER.info("clip code cache %s was made with another codec; encoding again", path)
        return {}
    return {k: v.long() for k, v in tensors.items()}


def _write_cache(path: Path, cache: dict[str, torch.Tensor], fingerprint: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, cache, {"format": CLIP_CODES_FORMAT, "codec": fingerprint})
