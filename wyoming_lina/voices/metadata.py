"""What a ``voice.yaml`` and a voices-file entry may say: every field type-checked and bounded.

What the server shows Home Assistant for a voice (name, description, languages) comes from
these files, and ``describe`` is answered many times a day, so no field may grow it: a value
of the wrong type or over its bound makes the voice unusable, with the field and the bound
named (``voice list`` shows it), never an exception and never a long message. The bounds are
far above what the tools write (they check them before writing); unknown keys are ignored.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import VoiceError
from .files import KINDS
from .transcripts import MAX_TRANSCRIPT_CHARS

MAX_DESCRIPTION_CHARS = 500  # shown in Home Assistant's voice picker
MAX_LANGUAGES = 16
MAX_LANGUAGE_CHARS = 35  # the longest language tags in use (BCP 47 with script and region) are shorter
MAX_SOURCE_CHARS = 2000  # where the voice came from: a clip, a state file, each tuning run
MAX_CREATED_CHARS = 64
MAX_PATH_CHARS = 4096  # a path in the voices file (Linux's PATH_MAX)
MAX_RECIPE_ENTRIES = 32  # the built-in voice's ``generated`` recipe (about ten entries)
MAX_RECIPE_TEXT_CHARS = 500
MAX_FILE_VOICES = 1000  # voices one voices file may list (each is a voice in every describe)

_LANGUAGE_RE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")
FILE_VOICE_KEYS = frozenset({"audio", "text", "text_file", "state", "languages", "language", "description"})


@dataclass(frozen=True)
class VoiceMeta:
    """The fields of a voice.yaml, checked."""

    kind: str | None = None  # None: from the files present
    languages: tuple[str, ...] = ("en",)
    description: str = ""
    created: str = ""
    source: str = ""
    text: str | None = None  # a transcript kept in voice.yaml instead of prompt.txt
    frames_per_char: float | None = None


@dataclass(frozen=True)
class FileVoiceSpec:
    """One voice of the voices file, checked (paths as written, relative to the file)."""

    audio: str | None
    text: str | None
    text_file: str | None
    state: str | None
    languages: tuple[str, ...]
    description: str


def brief(value: object, limit: int = 40) -> str:
    """A short repr for messages (a wrong value may be long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def text_field(value: object, field: str, where: object, limit: int) -> str | None:
    """A string of at most ``limit`` characters, or None when absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise VoiceError(f"{where}: {field} must be text, not {type(value).__name__} {brief(value)}")
    if len(value) > limit:
        raise VoiceError(f"{where}: {field} is {len(value)} characters long; the limit is {limit}")
    return value


def check_description(text: str, where: object = "the voice") -> str:
    """A description the store may write (the bound it checks when reading)."""
    return text_field(text, "description", where, MAX_DESCRIPTION_CHARS) or ""


def bounded_source(text: str) -> str:
    """A ``source`` line cut to its bound, keeping its start (the clip) and its end (the newest tuning)."""
    if len(text) <= MAX_SOURCE_CHARS:
        return text
    half = (MAX_SOURCE_CHARS - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def parse_languages(value, default: tuple[str, ...], where: object) -> tuple[str, ...]:
    """``en`` or ``[en, de]`` -> ('en', 'de'); VoiceError for anything else."""
    if value is None:
        return default
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise VoiceError(f"{where}: languages must be a language code or a non-empty list of them")
    if len(items) > MAX_LANGUAGES:
        raise VoiceError(f"{where}: {len(items)} languages; the limit is {MAX_LANGUAGES}")
    out = []
    for item in items:
        ok = isinstance(item, str) and len(item.strip()) <= MAX_LANGUAGE_CHARS and _LANGUAGE_RE.fullmatch(item.strip())
        if not ok:
            raise VoiceError(f"{where}: {brief(item)} is not a language code (like 'en' or 'en_US')")
        out.append(item.strip())
    return tuple(dict.fromkeys(out))


def _created(value, where) -> str:
    if isinstance(value, (datetime.date, datetime.datetime)):  # an unquoted timestamp in a hand-written file
        return value.isoformat()
    return text_field(value, "created", where, MAX_CREATED_CHARS) or ""


def _frames_per_char(value, where) -> float | None:
    """``frames_per_char`` (written by tuning): a number in the plausible range."""
    from ..engine.lengths import MAX_FRAMES_PER_CHAR, MIN_FRAMES_PER_CHAR

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VoiceError(f"{where}: frames_per_char must be a number, not {brief(value)}")
    if not MIN_FRAMES_PER_CHAR <= value <= MAX_FRAMES_PER_CHAR:
        raise VoiceError(f"{where}: frames_per_char must be between {MIN_FRAMES_PER_CHAR} and {MAX_FRAMES_PER_CHAR}")
    return float(value)


def _check_recipe(value, where) -> None:
    """The built-in voice's ``generated`` recipe: a small mapping of plain values (a record only)."""
    if value is None:
        return
    if not isinstance(value, dict) or len(value) > MAX_RECIPE_ENTRIES:
        raise VoiceError(f"{where}: generated must be a mapping of at most {MAX_RECIPE_ENTRIES} settings")
    for key, item in value.items():
        text_field(key, "a generated setting's name", where, 64)
        if isinstance(item, float) and not math.isfinite(item):
            raise VoiceError(f"{where}: generated.{key} must be a finite number")
        if isinstance(item, str):
            text_field(item, f"generated.{key}", where, MAX_RECIPE_TEXT_CHARS)
        elif item is not None and not isinstance(item, (bool, int, float)):
            raise VoiceError(f"{where}: generated.{key} must be text, a number or true/false, not {brief(item)}")


def parse_voice_meta(data: dict, where: object, default_languages: tuple[str, ...]) -> VoiceMeta:
    """The checked fields of a voice.yaml mapping."""
    kind = data.get("kind")
    if kind is not None and kind not in KINDS:
        raise VoiceError(f"{where}: kind must be one of {', '.join(KINDS)}, not {brief(kind)}")
    _check_recipe(data.get("generated"), where)
    return VoiceMeta(
        kind=kind,
        languages=parse_languages(data.get("languages", data.get("language")), default_languages, where),
        description=text_field(data.get("description"), "description", where, MAX_DESCRIPTION_CHARS) or "",
        created=_created(data.get("created"), where),
        source=text_field(data.get("source"), "source", where, MAX_SOURCE_CHARS) or "",
        text=text_field(data.get("text"), "text", where, MAX_TRANSCRIPT_CHARS),
        frames_per_char=_frames_per_char(data.get("frames_per_char"), where),
    )


def parse_file_voice(spec: dict, where: object, default_languages: tuple[str, ...]) -> FileVoiceSpec:
    """The checked settings of one voice in the voices file."""
    unknown = set(spec) - FILE_VOICE_KEYS
    if unknown:
        raise VoiceError(f"{where}: unknown settings {brief(', '.join(sorted(map(str, unknown))), 200)}")
    return FileVoiceSpec(
        audio=text_field(spec.get("audio"), "audio", where, MAX_PATH_CHARS),
        text=text_field(spec.get("text"), "text", where, MAX_TRANSCRIPT_CHARS),
        text_file=text_field(spec.get("text_file"), "text_file", where, MAX_PATH_CHARS),
        state=text_field(spec.get("state"), "state", where, MAX_PATH_CHARS),
        languages=parse_languages(spec.get("languages", spec.get("language")), default_languages, where),
        description=text_field(spec.get("description"), "description", where, MAX_DESCRIPTION_CHARS) or "",
    )


def read_text_file(path: Path, where: object = None, limit: int = MAX_TRANSCRIPT_CHARS) -> str:
    """A transcript file (prompt.txt, a voices file's text_file), read no further than its bound,
    on one line with single spaces."""
    prefix = f"{where}: " if where is not None else ""
    too_long = VoiceError(f"{prefix}the transcript in {path} is longer than {limit} characters")
    try:
        with open(path, "rb") as f:
            raw = f.read(4 * limit + 1)  # UTF-8: at most 4 bytes a character
        if len(raw) > 4 * limit:
            raise too_long
        text = " ".join(raw.decode("utf-8").split())
    except (OSError, UnicodeDecodeError) as err:
        raise VoiceError(f"{prefix}cannot read {path}: {err}") from err
    if len(text) > limit:
        raise too_long
    return text
