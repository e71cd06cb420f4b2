"""The catalog: which voices there are (rescanned on every call), and the voices loaded so far.

``list()`` rescans the disk on each call (Home Assistant asks on every describe), so a voice
added while the server runs appears at once. Scanning only stats files and re-reads what
changed (``scanning.py``); a broken voice is logged once (again only if it breaks
differently, ``problems.py``) and listed with ``installed=False``. ``get(name)`` loads a voice
(case-insensitive name) and keeps it while its files' signatures stay the same; a voice that
failed to load is remembered as failed until its files change.
"""

from __future__ import annotations

import difflib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import LinaError, UnknownVoiceError, VoiceError
from .encoding import PromptEncoder
from .names import name_key, name_problem
from .problems import ProblemLog, Topic
from .scanning import (
    ScanContext,
    VoiceEntry,
    default_description,
    directory_signature,
    file_entry_signatures,
    folder_signature,
    read_voices_file,
    scan_folder,
    stat_signature,
    unusable,
    voice_folders,
    without_code_cache,
)
from .transcripts import check_transcript
from .voice import Voice, VoiceInfo

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Loaded:
    signature: tuple
    voice: Voice


@dataclass(frozen=True)
class _Failed:
    signature: tuple
    message: str


@dataclass(frozen=True)
class _FileScan:
    signature: object  # the voices file's stat (None: not read yet)
    entries: dict[str, VoiceEntry]


@dataclass(frozen=True)
class _Scanned:
    """The last full scan: the voices folder as it was before it, and what it found."""

    folder: object  # directory_signature of the voices folder
    entries: dict[str, VoiceEntry]


class VoiceCatalog:
    """Voices by name key, from the voice folders and the voices file, with what is loaded."""

    def __init__(
        self,
        ctx: ScanContext,
        voices_file: Path | None,
        encoder: PromptEncoder,
        *,
        tokenizer=None,
        log_problems: bool = True,
    ):
        self.ctx = ctx
        self.voices_file = voices_file
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.problems = ProblemLog(_LOGGER, log_problems)
        self.lock = threading.RLock()
        self._folders: dict[str, VoiceEntry] = {}  # folder name -> its last record
        self._file = _FileScan(None, {})
        self._loaded: dict[str, _Loaded] = {}  # name key -> the voice loaded from these files
        self._scanned: _Scanned | None = None
        self._failed: dict[str, _Failed] = {}  # name key -> why loading these files failed

    # --- asking ----------------------------------------------------------------------------
    def list(self) -> list[VoiceInfo]:
        with self.lock:
            return [self.info(key, entry) for key, entry in sorted(self.scan().items())]

    def __contains__(self, name: object) -> bool:
        with self.lock:
            return isinstance(name, str) and name_key(name) in self.scan()

    def entry(self, name: str | None) -> VoiceEntry:
        with self.lock:
            entries = self.scan()
            entry = entries.get(name_key(name)) if name else None
            if entry is None:
                raise UnknownVoiceError(self._unknown_message(name, entries))
            return entry

    def get(self, name: str | None) -> Voice:
        with self.lock:
            entry = self.entry(name)
            key = name_key(entry.name)
            if entry.problem:
                raise VoiceError(f"voice {entry.name!r} is broken: {entry.problem}")
            loaded = self._loaded.get(key)
            if loaded is not None and loaded.signature == entry.signature:
                return loaded.voice
            failed = self._failed.get(key)
            if failed is not None and failed.signature == entry.signature:
                raise VoiceError(failed.message)
        try:
            voice = self._load(entry)  # outside the lock: encoding a clip must not hold up list()
        except (LinaError, OSError, ValueError, RuntimeError) as err:  # a broken voice never escapes as a crash
            message = str(err) if isinstance(err, VoiceError) else f"voice {entry.name!r}: {err}"
            with self.lock:
                self._failed[key] = _Failed(entry.signature, message)
                self.problems.report(Topic.VOICE, key, unusable(entry, message))
            raise VoiceError(message) from err
        with self.lock:
            # the code cache may just have been written: key the loaded voice by the new signature,
            # unless another file changed meanwhile (then the next get() loads it again)
            now = self._rescan(key, entry)
            signature = now.signature if without_code_cache(now) == without_code_cache(entry) else entry.signature
            self._failed.pop(key, None)
            self._loaded[key] = _Loaded(signature, voice)
        return voice

    def loaded(self, name: str | None) -> Voice | None:
        """What ``get(name)`` would return, when that needs no file read: the voice was loaded, and
        the voices folder (no voice added, removed or renamed), the voices file and the voice's own
        files are as they were (a few ``stat`` calls, so an event loop may ask). None otherwise, and
        while another thread uses the catalog: then ask ``get``, in a worker thread."""
        if not name or not self.lock.acquire(blocking=False):
            return None
        try:
            key, scanned = name_key(name), self._scanned
            if scanned is None or directory_signature(self.ctx.voices_dir) != scanned.folder:
                return None
            if self.voices_file is not None and stat_signature(self.voices_file) != self._file.signature:
                return None
            entry, loaded = scanned.entries.get(key), self._loaded.get(key)
            if entry is None or loaded is None:
                return None
            if entry.folder is not None:
                now = folder_signature(entry.folder)
            else:
                now = (self._file.signature, *file_entry_signatures(entry))
            return loaded.voice if now == loaded.signature else None
        finally:
            self.lock.release()

    def info(self, key: str, entry: VoiceEntry) -> VoiceInfo:
        """What Home Assistant is shown: a voice that failed to load (files unchanged) is not installed."""
        problem = entry.problem
        failed = self._failed.get(key)
        if not problem and failed is not None and failed.signature == entry.signature:
            problem = failed.message
        description = entry.description or default_description(entry)
        return VoiceInfo(entry.name, description, entry.languages, problem is None, entry.kind, problem or "")

    def forget(self, key: str) -> None:
        """Drop what is known of a voice (its folder was replaced or removed)."""
        with self.lock:
            self._loaded.pop(key, None)
            self._failed.pop(key, None)
            self.problems.clear(Topic.VOICE, key)

    # --- scanning --------------------------------------------------------------------------
    def scan(self) -> dict[str, VoiceEntry]:
        """Every voice by name key: the voice folders, then the voices file (which wins a clash)."""
        folder = directory_signature(self.ctx.voices_dir)  # before listing: a change meanwhile shows later
        entries: dict[str, VoiceEntry] = {}
        try:
            children = voice_folders(self.ctx.voices_dir)
        except OSError as err:
            self.problems.report(Topic.VOICES_DIR, "", f"cannot read the voices folder {self.ctx.voices_dir}: {err}")
            children = []
        bad_folders = set()
        for child in children:
            problem = name_problem(child.name)
            key = name_key(child.name)
            if not problem and key in entries:
                problem = f"voice {entries[key].name!r} has the same name"
            if problem:
                bad_folders.add(child.name)
                self.problems.report(Topic.FOLDER, child.name, f"ignoring folder {child.path}: {problem}")
                continue
            entries[key] = self._scan_folder(Path(child.path))
        self.problems.keep_only(Topic.FOLDER, bad_folders)
        for name in set(self._folders) - {e.folder.name for e in entries.values()}:
            del self._folders[name]
        for key, entry in self._scan_file().items():
            if key in entries:
                self.problems.report(
                    Topic.CLASH,
                    key,
                    f"voice {entry.name!r} from {entry.defined_in} hides the voice folder {entries[key].folder}",
                )
            entries[key] = entry
        for key in (set(self._loaded) | set(self._failed)) - set(entries):
            self.forget(key)  # a voice that is gone
        self.problems.keep_only(Topic.VOICE, set(entries))
        for key, entry in entries.items():
            message = entry.problem
            failed = self._failed.get(key)
            if not message and failed is not None and failed.signature == entry.signature:
                message = failed.message
            if message:
                self.problems.report(Topic.VOICE, key, unusable(entry, message), quiet=entry.unfinished)
            else:
                self.problems.clear(Topic.VOICE, key)
        self._scanned = _Scanned(folder, entries)
        return entries

    def _rescan(self, key: str, entry: VoiceEntry) -> VoiceEntry:
        if entry.folder is not None:
            return self._scan_folder(entry.folder)
        return self._scan_file().get(key, entry)

    def _scan_folder(self, folder: Path) -> VoiceEntry:
        signature = folder_signature(folder)
        cached = self._folders.get(folder.name)
        if cached is not None and cached.signature == signature:
            return cached
        entry = scan_folder(folder, signature, self.ctx)
        self._folders[folder.name] = entry
        return entry

    def _scan_file(self) -> dict[str, VoiceEntry]:
        path = self.voices_file
        if path is None:
            return {}
        signature = stat_signature(path)
        if signature is None:
            self.problems.report(Topic.VOICES_FILE, "", f"voices file {path} not found")
            self._file = _FileScan(None, {})
            return {}
        old = self._file
        if old.signature == signature:
            # the YAML itself is unchanged: re-check only the files its voices point at
            if all(entry.signature[1:] == file_entry_signatures(entry) for entry in old.entries.values()):
                return old.entries
        self.problems.clear(Topic.VOICES_FILE)
        try:
            entries, skipped = read_voices_file(path, signature, self.ctx)
        except VoiceError as err:
            self.problems.report(Topic.VOICES_FILE, "", str(err))
            self._file = _FileScan(signature, {})
            return {}
        for name, message in skipped:
            self.problems.report(Topic.FILE_ENTRY, name, message)
        self.problems.keep_only(Topic.FILE_ENTRY, {name for name, _ in skipped})
        self._file = _FileScan(signature, entries)
        return entries

    def _unknown_message(self, name: str | None, entries: dict[str, VoiceEntry]) -> str:
        available = sorted(e.name for k, e in entries.items() if self.info(k, e).installed)
        listing = ", ".join(available) if available else "none"
        if not name:
            return f"no voice was chosen and there is no default voice; available voices: {listing}"
        close = difflib.get_close_matches(name_key(name), [name_key(n) for n in available], n=1)
        hint = ""
        if close:
            hint = f" (did you mean {next(n for n in available if name_key(n) == close[0])!r}?)"
        return f"unknown voice {name!r}{hint}; available voices: {listing}"

    # --- loading ---------------------------------------------------------------------------
    def _load(self, entry: VoiceEntry) -> Voice:
        codes = text = None
        if entry.has_prompt:
            codes = self.encoder.prompt_codes(
                entry.name,
                entry.audio,
                entry.codes,
                trimmed=entry.folder is not None,  # a voice folder's clip was trimmed when it was added
                cache_problem=lambda message: self._cache_problem(entry, message),
            )
            self.encoder.check_codes(codes, entry.name)
            text = entry.text
            model = self.encoder.model
            text_len = model.config.max_text_len if model is not None else None
            check_transcript(text, self.tokenizer, text_len, f"voice {entry.name!r}: ")
        initial_state = None
        if entry.has_state:
            model = self.encoder.model
            if model is None:
                raise VoiceError(f"voice {entry.name!r} has a tuned state; loading it needs the model")
            from ..model import load_speaker_state

            initial_state = load_speaker_state(entry.state, model)
        return Voice(
            name=entry.name,
            languages=entry.languages,
            description=entry.description or default_description(entry),
            prompt_codes=codes,
            prompt_text=text,
            initial_state=initial_state,
            frames_per_char=entry.frames_per_char,
        )

    def _cache_problem(self, entry: VoiceEntry, message: str) -> None:
        with self.lock:
            self.problems.report(Topic.CODE_CACHE, name_key(entry.name), message)
