"""Reading what is on disk into :class:`VoiceEntry` records: cheap, no caching, no logging.

A voice folder is read from its ``voice.yaml`` (and ``prompt.txt``); the voices YAML file
(``--voices-file``) lists voices kept elsewhere. Each record carries a signature (the stat of
every file it depends on), so the catalog re-reads only what changed. Only cheap checks run
here (files present, the clip's header readable, a state's shapes): what the record is
about is a problem in the record, never an exception.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import soundfile

from ..errors import VoiceError
from .files import (
    PROMPT_AUDIO,
    PROMPT_CODES,
    PROMPT_TEXT,
    STATE_FILE,
    TUNING_DIR,
    VOICE_FILE,
    VOICES_FILE_MAX_BYTES,
    inspect_state_tensors,
    load_tensors,
    read_yaml_mapping,
)
from .metadata import MAX_FILE_VOICES, parse_file_voice, parse_voice_meta, read_text_file
from .names import name_key, name_problem

CONFIG_CACHE_DIR = ".cache"  # prompt-code caches of voices from the YAML file (not a valid voice name)
FOLDER_FILES = (VOICE_FILE, PROMPT_AUDIO, PROMPT_TEXT, PROMPT_CODES, STATE_FILE)  # a folder's signature
MAX_STATE_BYTES = 64 << 20  # a speaker state is kilobytes (rank 1) to a few MiB: never load more


@dataclass(frozen=True)
class VoiceEntry:
    """Where a voice's files are and what its voice.yaml says (no heavy reading)."""

    name: str
    kind: str
    languages: tuple[str, ...]
    description: str = ""
    folder: Path | None = None  # voices in the data dir; None for voices from the YAML file
    audio: Path | None = None
    text: str | None = None
    text_file: Path | None = None  # a voices-file transcript kept in its own file
    state: Path | None = None
    codes: Path | None = None  # prompt-code cache
    created: str = ""
    source: str = ""
    defined_in: Path | None = None
    frames_per_char: float | None = None  # speaking rate recorded by tuning
    problem: str | None = None
    unfinished: bool = False  # a folder holding only an unfinished tuning (a normal condition)
    signature: tuple = ()

    @property
    def has_prompt(self) -> bool:
        return "prompt" in self.kind.split("+")

    @property
    def has_state(self) -> bool:
        return "state" in self.kind.split("+")


@dataclass(frozen=True)
class ScanContext:
    """What reading a record needs to know besides the files."""

    voices_dir: Path
    default_languages: tuple[str, ...]
    model_config: object = None  # a state must fit it (None: only its layout is checked)


def stat_signature(path: Path | None):
    """(mtime, size) of a file, or None when it is not there."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def directory_signature(path: Path):
    """(mtime, link count, inode) of a folder, or None: a subfolder added or removed changes its
    link count even within the clock tick of the folder's last change."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_nlink, st.st_ino)


def folder_signature(folder: Path) -> tuple:
    return tuple(stat_signature(folder / f) for f in FOLDER_FILES)


def without_code_cache(entry: VoiceEntry) -> tuple:
    """A folder voice's signature without its prompt-code cache (which loading may write)."""
    if entry.folder is None:
        return entry.signature
    return tuple(sig for name, sig in zip(FOLDER_FILES, entry.signature, strict=True) if name != PROMPT_CODES)


def default_description(entry: VoiceEntry) -> str:
    how = {"prompt": "cloned from a clip", "state": "tuned voice", "prompt+state": "tuned voice with a clip"}
    return f"{entry.name} ({how.get(entry.kind, 'voice')})"


def unusable(entry: VoiceEntry, problem: str) -> str:
    """The one log line for a voice's problem (the same from list() and get(): logged once)."""
    return f"voice {entry.name!r} is not usable: {problem}"


# --- voice folders -------------------------------------------------------------------------
def scan_folder(folder: Path, signature: tuple, ctx: ScanContext) -> VoiceEntry:
    """The record of one voice folder; a broken one has its ``problem`` set."""
    try:
        return _read_folder(folder, signature, ctx)
    except (VoiceError, OSError, ValueError) as err:  # a file changing under the scan too
        unfinished = not (folder / VOICE_FILE).exists() and (folder / TUNING_DIR).is_dir()
        return VoiceEntry(
            name=folder.name,
            kind="state" if unfinished else "unknown",
            languages=ctx.default_languages,
            folder=folder,
            problem=str(err),
            unfinished=unfinished,
            signature=signature,
        )


def _read_folder(folder: Path, signature: tuple, ctx: ScanContext) -> VoiceEntry:
    yaml_path = folder / VOICE_FILE
    if not yaml_path.is_file():
        if (folder / TUNING_DIR).is_dir():
            raise VoiceError("tuning is not finished")
        raise VoiceError(f"{VOICE_FILE} is missing from {folder}")
    meta = parse_voice_meta(read_yaml_mapping(yaml_path, what="voice file"), yaml_path, ctx.default_languages)
    audio, codes, state = folder / PROMPT_AUDIO, folder / PROMPT_CODES, folder / STATE_FILE
    text = meta.text
    if text is None and (folder / PROMPT_TEXT).is_file():
        text = read_text_file(folder / PROMPT_TEXT)
    kind = meta.kind
    if kind is None:
        kinds = (["prompt"] if audio.is_file() or codes.is_file() else []) + (["state"] if state.is_file() else [])
        kind = "+".join(kinds)
        if not kind:
            raise VoiceError(f"{yaml_path}: no kind, and neither a clip nor a state in the folder")
    entry = VoiceEntry(
        name=folder.name,
        kind=kind,
        languages=meta.languages,
        description=meta.description,
        folder=folder,
        audio=audio,
        text=None if text is None else " ".join(text.split()),
        state=state,
        codes=codes,
        created=meta.created,
        source=meta.source,
        defined_in=yaml_path,
        frames_per_char=meta.frames_per_char,
        signature=signature,
    )
    check_entry(entry, ctx, audio_required=not codes.is_file())
    return entry


# --- the voices file -----------------------------------------------------------------------
def read_voices_file(path: Path, data_sig, ctx: ScanContext) -> tuple[dict[str, VoiceEntry], list[tuple[str, str]]]:
    """The voices ``path`` lists, by name key, and the names it skips with why ([(name, message)]).
    Raises VoiceError when the file as a whole cannot be read."""
    data = read_yaml_mapping(path, VOICES_FILE_MAX_BYTES, "voices file")
    if set(data) == {"voices"} and isinstance(data["voices"], dict):
        data = data["voices"]
    if len(data) > MAX_FILE_VOICES:
        raise VoiceError(f"{path} lists {len(data)} voices; the limit is {MAX_FILE_VOICES}")
    entries: dict[str, VoiceEntry] = {}
    skipped: list[tuple[str, str]] = []
    for name, spec in data.items():
        problem = name_problem(name)
        if problem:
            skipped.append((str(name), f"{path}: {problem}"))
            continue
        key = name_key(name)
        if key in entries:
            skipped.append((name, f"{path}: voice {name!r} is listed twice (names ignore case)"))
            continue
        entries[key] = _file_entry(path, name, spec, data_sig, ctx)
    return entries, skipped


def file_entry_signatures(entry: VoiceEntry) -> tuple:
    """The stats of the files a voices-file voice points at."""
    return tuple(stat_signature(p) for p in (entry.audio, entry.state, entry.text_file))


def _file_entry(path: Path, name: str, spec, data_sig, ctx: ScanContext) -> VoiceEntry:
    where = f"{path}: voice {name!r}"

    def resolve(value: str | None) -> Path | None:
        return None if not value else (path.parent / Path(value).expanduser())

    entry = VoiceEntry(
        name=name,
        kind="unknown",
        languages=ctx.default_languages,
        codes=ctx.voices_dir / CONFIG_CACHE_DIR / f"{name_key(name)}.{PROMPT_CODES}",
        source=f"listed in {path}",
        defined_in=path,
        signature=(data_sig, None, None, None),
    )
    try:
        if not isinstance(spec, dict) or not spec:
            raise VoiceError(f"{where} must be a mapping with audio + text, and/or state")
        fields = parse_file_voice(spec, where, ctx.default_languages)
        entry = replace(
            entry,
            kind="+".join(k for k, v in (("prompt", fields.audio), ("state", fields.state)) if v) or "unknown",
            languages=fields.languages,
            description=fields.description,
            audio=resolve(fields.audio),
            text_file=resolve(fields.text_file),
            state=resolve(fields.state),
        )
        entry = replace(entry, signature=(data_sig, *file_entry_signatures(entry)))
        if entry.kind == "unknown":
            raise VoiceError(f"{where} needs audio + text, or state")
        text = fields.text
        if text is None and entry.text_file is not None:
            text = read_text_file(entry.text_file, where)
        entry = replace(entry, text=None if text is None else " ".join(text.split()))
        check_entry(entry, ctx, audio_required=True, where=where)
    except (VoiceError, OSError, ValueError) as err:
        return replace(entry, problem=str(err))
    return entry


# --- cheap checks --------------------------------------------------------------------------
def check_entry(entry: VoiceEntry, ctx: ScanContext, audio_required: bool, where: str | None = None) -> None:
    """The files a kind needs exist, the clip's header is readable, the state fits the model."""
    where = where or f"voice {entry.name!r}"
    if entry.has_prompt:
        if audio_required and (entry.audio is None or not entry.audio.is_file()):
            raise VoiceError(f"{where}: the clip {entry.audio} is missing")
        if not entry.text:
            raise VoiceError(f"{where}: the clip's transcript is missing (prompt.txt, or text: in the YAML)")
        if entry.audio is not None and entry.audio.is_file():
            try:
                soundfile.info(str(entry.audio))
            except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
                raise VoiceError(f"{where}: cannot read the clip {entry.audio}: {err}") from err
    if entry.has_state:
        if entry.state is None or not entry.state.is_file():
            raise VoiceError(f"{where}: the state file {entry.state} is missing")
        size = entry.state.stat().st_size
        if size > MAX_STATE_BYTES:
            raise VoiceError(
                f"{where}: the state file {entry.state} is {size >> 20} MiB; a speaker state is far smaller"
            )
        tensors, _ = load_tensors(entry.state)
        inspect_state_tensors(tensors, str(entry.state), ctx.model_config)


def voice_folders(voices_dir: Path) -> list[os.DirEntry]:
    """The folders in ``voices_dir`` that may be voices (not hidden: temporary, trash, caches),
    by name; FileNotFoundError is an empty list, other OSErrors are raised."""
    try:
        children = sorted(os.scandir(voices_dir), key=lambda d: d.name)
    except FileNotFoundError:
        return []
    out = []
    for child in children:
        if child.name.startswith("."):
            continue
        try:
            if child.is_dir():
                out.append(child)
        except OSError:
            continue
    return out
