"""The voice store: every voice in ``<data_dir>/voices/<name>/``, plus voices listed in a YAML file.

``list()`` rescans the disk on each call (Home Assistant asks on every describe), so a voice
added while the server runs appears at once. Scanning only stats files and re-reads what
changed; a broken voice is logged once (again only if it breaks differently) and listed
with ``installed=False``. ``get(name)`` loads a voice (case-insensitive name) and caches it
by file mtimes: a prompt voice's clip is encoded with the codec once and the codes cached
next to it; a state voice's file is checked against the model.

A YAML file (``config_path``) may list voices kept elsewhere::

    alice:
      audio: clips/alice.wav        # relative to the YAML file
      text: "Exactly what is said in the clip."
      languages: [en]
      description: Alice, cloned from a kitchen recording
    bob:
      state: /voices/bob.safetensors  # an upstream speaker-state file
"""

from __future__ import annotations

import datetime
import difflib
import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import soundfile
import torch

from ..codec.audio import CODEC_RATE
from ..errors import AudioFileError, LinaError, UnknownVoiceError, VoiceError
from .clips import PROMPT_LIMITS, prepare_clip, speaking_rate_warning, write_clip
from .files import (
    CODES_FORMAT,
    KINDS,
    PROMPT_AUDIO,
    PROMPT_CODES,
    PROMPT_TEXT,
    STATE_FILE,
    TUNING_DIR,
    VOICE_FILE,
    VOICES_DIR,
    atomic_write_text,
    codec_fingerprint,
    inspect_state_tensors,
    load_tensors,
    parse_languages,
    read_yaml_mapping,
    save_tensors,
    sha256_file,
    write_yaml,
)
from .names import name_key, name_problem, validate_name
from .voice import Voice, VoiceInfo

_LOGGER = logging.getLogger(__name__)
CONFIG_CACHE_DIR = ".cache"  # prompt-code caches of voices from the YAML file (not a valid voice name)
_FOLDER_FILES = (VOICE_FILE, PROMPT_AUDIO, PROMPT_TEXT, PROMPT_CODES, STATE_FILE)


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
    quiet: bool = False  # a problem that is a normal condition (tuning not finished): log at info
    signature: tuple = ()

    @property
    def has_prompt(self) -> bool:
        return "prompt" in self.kind.split("+")

    @property
    def has_state(self) -> bool:
        return "state" in self.kind.split("+")


@dataclass(frozen=True)
class AddResult:
    info: VoiceInfo
    warnings: tuple[str, ...] = ()
    folder: Path | None = None


@dataclass
class _Caches:
    entries: dict[str, VoiceEntry] = field(default_factory=dict)  # folder name -> last scan
    config: tuple = ((), {})  # (signature, {key: VoiceEntry}) of the YAML file
    loaded: dict[str, tuple[tuple, Voice]] = field(default_factory=dict)  # key -> (signature, voice)
    failed: dict[str, tuple[tuple, str]] = field(default_factory=dict)  # key -> (signature, message)
    reported: dict[str, str] = field(default_factory=dict)  # key -> message already logged
    scanned: tuple | None = None  # (voices folder's signature, {key: VoiceEntry}) of the last scan


def _stat(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _folder_stat(path: Path):
    """A folder's signature: its time and its link count (one per subfolder: a voice folder added
    or removed changes it even within the clock tick of the last change)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_nlink, st.st_ino)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


class VoiceStore:
    """Voices by name. ``codec`` encodes prompt clips, ``model`` validates and places tuned states,
    ``tokenizer`` (optional) checks transcripts; without them the store can still list, add
    and remove voices, and loads what needs none of them."""

    def __init__(
        self,
        data_dir: str | Path,
        codec=None,
        model=None,
        config_path: str | Path | None = None,
        *,
        tokenizer=None,
        default_languages: tuple[str, ...] = ("en",),
        log_problems: bool = True,
    ):
        self.data_dir = Path(data_dir)
        self.voices_dir = self.data_dir / VOICES_DIR
        self.codec = codec
        self.model = model
        self.tokenizer = tokenizer
        self.config_path = Path(config_path) if config_path is not None else None
        self.default_languages = tuple(default_languages)
        self.log_problems = log_problems  # the CLI shows problems itself
        self._lock = threading.RLock()
        self._caches = _Caches()

    def attach(self, *, codec=None, model=None, tokenizer=None) -> None:
        """The model parts, once loaded (a server lists voices before that); cached voices are
        loaded again with them."""
        with self._lock:
            self.codec, self.model, self.tokenizer = codec, model, tokenizer
            self._caches.loaded.clear()
            self._caches.failed.clear()

    # --- reading ---------------------------------------------------------------------------
    def list(self) -> list[VoiceInfo]:
        """Every voice, rescanned from disk; broken ones with ``installed=False``."""
        with self._lock:
            entries = self._scan()
            return [self._info(key, entry) for key, entry in sorted(entries.items())]

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return isinstance(name, str) and name_key(name) in self._scan()

    def get(self, name: str | None) -> Voice:
        """The voice called ``name`` (any case). UnknownVoiceError names the voices there are;
        VoiceError says what is wrong with a broken one."""
        with self._lock:
            entries = self._scan()
            key = name_key(name) if name else ""
            entry = entries.get(key)
            if entry is None:
                raise UnknownVoiceError(self._unknown_message(name, entries))
            if entry.problem:
                raise VoiceError(f"voice {entry.name!r} is broken: {entry.problem}")
            loaded = self._caches.loaded.get(key)
            if loaded is not None and loaded[0] == entry.signature:
                return loaded[1]
            failed = self._caches.failed.get(key)
            if failed is not None and failed[0] == entry.signature:
                raise VoiceError(failed[1])
        try:
            voice = self._load(entry)  # outside the lock: encoding a clip must not hold up list()
        except (LinaError, OSError, ValueError, RuntimeError) as err:  # a broken voice never escapes as a crash
            message = str(err) if isinstance(err, VoiceError) else f"voice {entry.name!r}: {err}"
            with self._lock:
                self._caches.failed[key] = (entry.signature, message)
                self._report(key, _unusable(entry, message))
            raise VoiceError(message) from err
        with self._lock:
            # the code cache may just have been written: key the loaded voice by the new signature,
            # unless another file changed meanwhile (then the next get() loads it again)
            now = self._rescan_entry(key, entry)
            signature = now.signature if _without_cache(now) == _without_cache(entry) else entry.signature
            self._caches.failed.pop(key, None)
            self._caches.loaded[key] = (signature, voice)
        return voice

    def loaded(self, name: str | None) -> Voice | None:
        """What ``get(name)`` would return, when that needs no file read: the voice was loaded, and
        the voices folder (no voice added, removed or renamed), the voices file and the voice's own
        files are as they were (a few ``stat`` calls, so an event loop may ask). None otherwise, and
        while another thread uses the store: then ask ``get``, in a worker thread."""
        if not name or not self._lock.acquire(blocking=False):
            return None
        try:
            key, caches = name_key(name), self._caches
            if caches.scanned is None or _folder_stat(self.voices_dir) != caches.scanned[0]:
                return None
            if self.config_path is not None and (_stat(self.config_path),) != (caches.config[0] or (None,)):
                return None
            entry, loaded = caches.scanned[1].get(key), caches.loaded.get(key)
            if entry is None or loaded is None:
                return None
            if entry.folder is not None:
                signature = tuple(_stat(entry.folder / f) for f in _FOLDER_FILES)
            else:
                signature = (caches.config[0][0], *self._config_file_sigs(entry))
            return loaded[1] if signature == loaded[0] else None
        finally:
            self._lock.release()

    def warm(self) -> list[VoiceInfo]:
        """Load every voice now (encoding clips whose codes are not cached); call at start-up,
        before serving, so no request waits for an encode. Failures are logged, not raised."""
        for info in self.list():
            if info.installed:
                try:
                    self.get(info.name)
                except LinaError:
                    pass  # already logged once by get()
        return self.list()

    def entry(self, name: str) -> VoiceEntry:
        """The scanned record of a voice (also of a broken one)."""
        with self._lock:
            entries = self._scan()
            entry = entries.get(name_key(name)) if name else None
            if entry is None:
                raise UnknownVoiceError(self._unknown_message(name, entries))
            return entry

    def show(self, name: str) -> dict:
        """Everything known about a voice, for ``voice show`` (works for broken voices too)."""
        entry = self.entry(name)
        info = self._info(name_key(entry.name), entry)
        out: dict = {
            "name": entry.name,
            "kind": entry.kind,
            "installed": info.installed,
            "problem": info.problem or None,
            "languages": list(entry.languages),
            "description": entry.description,
            "created": entry.created,
            "source": entry.source,
            "folder": str(entry.folder) if entry.folder else None,
            "defined_in": str(entry.defined_in) if entry.defined_in else None,
        }
        if entry.has_prompt:
            prompt: dict = {"transcript": entry.text, "audio": str(entry.audio) if entry.audio else None}
            if entry.audio is not None and entry.audio.is_file():
                try:
                    prompt["seconds"] = round(soundfile.info(str(entry.audio)).duration, 2)
                except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
                    prompt["audio_problem"] = str(err)
            prompt["codes_cached"] = False
            if entry.codes is not None and entry.codes.is_file():
                try:
                    tensors, meta = load_tensors(entry.codes)
                    prompt["codes_cached"] = True
                    prompt["frames"] = int(tensors["codes"].numel())
                    prompt["codes_origin"] = meta.get("origin")
                except (VoiceError, KeyError):
                    pass
            out["prompt"] = prompt
        if entry.has_state and entry.state is not None:
            state: dict = {"file": str(entry.state)}
            try:
                tensors, meta = load_tensors(entry.state)
                state["layers"], state["rank"] = inspect_state_tensors(tensors, str(entry.state))
                state.update({k: v for k, v in meta.items() if k != "format"})
            except VoiceError as err:
                state["problem"] = str(err)
            out["state"] = state
        if entry.folder is not None and (entry.folder / TUNING_DIR).is_dir():
            out["tuning_dir"] = str(entry.folder / TUNING_DIR)
        return out

    # --- writing ---------------------------------------------------------------------------
    def add(
        self,
        name: str,
        *,
        audio: str | Path | None = None,
        text: str | None = None,
        state: str | Path | None = None,
        languages: tuple[str, ...] | list[str] | None = None,
        description: str = "",
        overwrite: bool = False,
    ) -> AddResult:
        """Create a voice from a clip + transcript (a prompt voice), an upstream speaker-state
        file (a state voice), or both. Refuses what cannot work; returns warnings for what
        merely works badly. The folder appears atomically, complete."""
        validate_name(name)
        if audio is None and state is None:
            raise VoiceError("a voice needs a clip (--audio with --text) or a speaker state (--state)")
        if audio is not None and not (text or "").strip():
            raise VoiceError("a clip needs its transcript (--text): exactly the words spoken in it")
        if audio is None and text:
            raise VoiceError("--text is the transcript of a clip; give the clip with --audio too")
        langs = parse_languages(list(languages) if languages else None, self.default_languages, "languages")
        existing = self._existing_for_write(name, overwrite)
        warnings: list[str] = []
        meta: dict = {"kind": "", "languages": list(langs), "description": description.strip(), "created": _now()}
        sources = []
        self.voices_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.voices_dir / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            kinds = []
            if audio is not None:
                text = " ".join(text.split())  # one line, single spaces
                self._check_transcript(text)
                clip = prepare_clip(audio, PROMPT_LIMITS)
                warnings += clip.warnings
                rate_warning = speaking_rate_warning(text, clip.seconds)
                if rate_warning:
                    warnings.append(rate_warning)
                write_clip(tmp / PROMPT_AUDIO, clip.samples)
                atomic_write_text(tmp / PROMPT_TEXT, text + "\n")
                if self.codec is not None:
                    codes = self._encode_clip(tmp / PROMPT_AUDIO, trim=False)
                    self._check_codes(codes, name)
                    self._write_codes(tmp / PROMPT_CODES, codes, "encoded", sha256_file(tmp / PROMPT_AUDIO))
                kinds.append("prompt")
                sources.append(
                    f"clip {Path(audio).name} ({clip.source_rate} Hz, {clip.source_channels} channel(s), "
                    f"{clip.source_seconds:.1f} s; {clip.seconds:.1f} s after trimming silence)"
                )
            if state is not None:
                tensors = self._read_state_file(Path(state))
                save_tensors(tmp / STATE_FILE, tensors)
                kinds.append("state")
                sources.append(f"speaker state {Path(state).name}")
            meta["kind"] = "+".join(kinds)
            meta["source"] = "; ".join(sources)
            write_yaml(tmp / VOICE_FILE, meta)
            self._move_into_place(tmp, name, existing)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _LOGGER.info("added voice %r (%s)", name, meta["kind"])
        with self._lock:
            key = name_key(name)
            info = self._info(key, self._scan()[key])
        return AddResult(info, tuple(warnings), self.voices_dir / name)

    def add_generated(
        self,
        name: str,
        codes: torch.Tensor,
        text: str,
        *,
        samples=None,
        languages: tuple[str, ...] | None = None,
        description: str = "",
        source: str = "",
        extra: dict | None = None,
    ) -> VoiceInfo:
        """Store a prompt voice whose codes were generated by the model (the default voice).

        The codes are the voice; ``samples`` (their decoding, 24 kHz) is kept as prompt.wav for
        listening. Unless someone replaces that clip, the codes are never re-encoded."""
        validate_name(name)
        self._check_codes(codes, name)
        self._existing_for_write(name, overwrite=False)  # raises when the name is taken
        self.voices_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.voices_dir / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            clip_sha = None
            if samples is not None:
                write_clip(tmp / PROMPT_AUDIO, samples)
                clip_sha = sha256_file(tmp / PROMPT_AUDIO)
            self._write_codes(tmp / PROMPT_CODES, codes, "generated", clip_sha)
            atomic_write_text(tmp / PROMPT_TEXT, " ".join(text.split()) + "\n")
            meta = {
                "kind": "prompt",
                "languages": list(languages or self.default_languages),
                "description": description,
                "created": _now(),
                "source": source,
                **(extra or {}),
            }
            write_yaml(tmp / VOICE_FILE, meta)
            self._move_into_place(tmp, name, None)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        with self._lock:
            key = name_key(name)
            return self._info(key, self._scan()[key])

    def remove(self, name: str) -> VoiceInfo:
        """Delete a voice folder (not a voice from the YAML file: edit that file)."""
        with self._lock:
            entry = self.entry(name)
            if entry.folder is None:
                raise VoiceError(f"voice {entry.name!r} is defined in {entry.defined_in}; remove it from that file")
            info = self._info(name_key(entry.name), entry)
            trash = self.voices_dir / f".trash-{entry.folder.name}-{uuid.uuid4().hex[:8]}"
            os.rename(entry.folder, trash)
            shutil.rmtree(trash, ignore_errors=True)
            self._forget(name_key(entry.name))
            _LOGGER.info("removed voice %r", entry.name)
            return info

    def folder_for_new_state(self, name: str) -> Path:
        """The folder a tuned state for ``name`` goes to: the existing voice's (any case) or a new
        one. Refuses voices defined in the YAML file."""
        validate_name(name)
        with self._lock:
            entry = self._scan().get(name_key(name))
            if entry is not None and entry.folder is None:
                raise VoiceError(f"voice {entry.name!r} is defined in {entry.defined_in}; choose another name")
            folder = entry.folder if entry is not None else self.voices_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_state_voice(
        self,
        name: str,
        tensors: dict[str, torch.Tensor],
        *,
        languages: tuple[str, ...] | None = None,
        description: str | None = None,
        source: str = "",
        metadata: dict[str, str] | None = None,
        frames_per_char: float | None = None,
    ) -> VoiceInfo:
        """Store a tuned state (upstream keys, float32) as ``name``'s state; a voice that already
        has a prompt keeps it and becomes ``prompt+state``. ``frames_per_char`` is the speaker's
        rate measured on the tuning clips (it bounds the length of what the voice says)."""
        folder = self.folder_for_new_state(name)
        inspect_state_tensors(tensors, "tuned state", self.model.config if self.model is not None else None)
        old: dict = {}
        if (folder / VOICE_FILE).is_file():
            try:
                old = read_yaml_mapping(folder / VOICE_FILE)
            except VoiceError:
                old = {}
        has_prompt = "prompt" in str(old.get("kind", "")) and (
            (folder / PROMPT_AUDIO).is_file() or (folder / PROMPT_CODES).is_file()
        )
        save_tensors(folder / STATE_FILE, {k: v.float() for k, v in tensors.items()}, metadata)
        langs = languages or parse_languages(old.get("languages"), self.default_languages, "voice.yaml")
        meta = dict(old)
        meta.update(
            {
                "kind": "prompt+state" if has_prompt else "state",
                "languages": list(langs),
                "description": description if description is not None else str(old.get("description", "")),
                "created": old.get("created") or _now(),
                "source": source,
            }
        )
        if old.get("source") and has_prompt:
            meta["source"] = f"{old['source']}; {source}"
        if frames_per_char is not None:
            meta["frames_per_char"] = round(float(frames_per_char), 3)
        write_yaml(folder / VOICE_FILE, meta)
        with self._lock:
            key = name_key(folder.name)
            return self._info(key, self._scan()[key])

    # --- scanning --------------------------------------------------------------------------
    def _scan(self) -> dict[str, VoiceEntry]:
        folder_signature = _folder_stat(self.voices_dir)  # before listing: a change meanwhile shows later
        entries: dict[str, VoiceEntry] = {}
        seen_folders = set()
        try:
            children = sorted(os.scandir(self.voices_dir), key=lambda d: d.name)
        except FileNotFoundError:
            children = []
        except OSError as err:
            self._report("dir:", f"cannot read the voices folder {self.voices_dir}: {err}")
            children = []
        for child in children:
            if child.name.startswith("."):
                continue  # temporary, trash and cache folders
            try:
                is_dir = child.is_dir()
            except OSError:
                is_dir = False
            if not is_dir:
                continue
            problem = name_problem(child.name)
            if problem:
                self._report(f"dir:{child.name}", f"ignoring folder {child.path}: {problem}")
                continue
            key = name_key(child.name)
            if key in entries:
                self._report(
                    f"dir:{child.name}", f"ignoring folder {child.path}: voice {entries[key].name!r} has the same name"
                )
                continue
            seen_folders.add(child.name)
            entries[key] = self._scan_folder(Path(child.path))
        for name in set(self._caches.entries) - seen_folders:
            del self._caches.entries[name]
        for key, entry in self._scan_config().items():
            if key in entries:
                self._report(
                    f"clash:{key}",
                    f"voice {entry.name!r} from {entry.defined_in} hides the voice folder {entries[key].folder}",
                )
            entries[key] = entry
        caches = self._caches
        for key in {k for k in (*caches.loaded, *caches.failed, *caches.reported) if ":" not in k} - set(entries):
            self._forget(key)  # a voice that is gone (names cannot hold ':', other report keys do)
        for key, entry in entries.items():
            message = entry.problem
            failed = self._caches.failed.get(key)
            if not message and failed is not None and failed[0] == entry.signature:
                message = failed[1]
            if message:
                self._report(key, _unusable(entry, message), quiet=entry.quiet)
            else:
                self._caches.reported.pop(key, None)
        self._caches.scanned = (folder_signature, entries)
        return entries

    def _rescan_entry(self, key: str, entry: VoiceEntry) -> VoiceEntry:
        if entry.folder is not None:
            return self._scan_folder(entry.folder)
        return self._scan_config().get(key, entry)

    def _scan_folder(self, folder: Path) -> VoiceEntry:
        signature = tuple(_stat(folder / f) for f in _FOLDER_FILES)
        cached = self._caches.entries.get(folder.name)
        if cached is not None and cached.signature == signature:
            return cached
        try:
            entry = self._read_folder(folder, signature)
        except VoiceError as err:
            quiet = not (folder / VOICE_FILE).exists() and (folder / TUNING_DIR).is_dir()
            entry = VoiceEntry(
                name=folder.name,
                kind="state" if quiet else "unknown",
                languages=self.default_languages,
                folder=folder,
                problem=str(err),
                quiet=quiet,
                signature=signature,
            )
        self._caches.entries[folder.name] = entry
        return entry

    def _read_folder(self, folder: Path, signature: tuple) -> VoiceEntry:
        yaml_path = folder / VOICE_FILE
        if not yaml_path.is_file():
            if (folder / TUNING_DIR).is_dir():
                raise VoiceError(f"tuning is not finished (continue with: voice tune {folder.name} --resume ...)")
            raise VoiceError(f"{VOICE_FILE} is missing from {folder}")
        meta = read_yaml_mapping(yaml_path)
        audio, codes, state = folder / PROMPT_AUDIO, folder / PROMPT_CODES, folder / STATE_FILE
        text = meta.get("text")
        if text is None and (folder / PROMPT_TEXT).is_file():
            try:
                text = (folder / PROMPT_TEXT).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise VoiceError(f"cannot read {folder / PROMPT_TEXT}: {err}") from err
        kind = meta.get("kind")
        if kind is None:
            kinds = (["prompt"] if audio.is_file() or codes.is_file() else []) + (["state"] if state.is_file() else [])
            kind = "+".join(kinds)
        if kind not in KINDS:
            raise VoiceError(f"{yaml_path}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
        entry = VoiceEntry(
            name=folder.name,
            kind=kind,
            languages=parse_languages(
                meta.get("languages", meta.get("language")), self.default_languages, str(yaml_path)
            ),
            description=str(meta.get("description") or ""),
            folder=folder,
            audio=audio,
            text=None if text is None else " ".join(str(text).split()),
            state=state,
            codes=codes,
            created=str(meta.get("created") or ""),
            source=str(meta.get("source") or ""),
            defined_in=yaml_path,
            frames_per_char=_speaking_rate(meta.get("frames_per_char"), yaml_path),
            signature=signature,
        )
        self._check_entry(entry, audio_required=not codes.is_file())
        return entry

    def _scan_config(self) -> dict[str, VoiceEntry]:
        path = self.config_path
        if path is None:
            return {}
        data_sig = _stat(path)
        if data_sig is None:
            self._report("config:", f"voices file {path} not found")
            self._caches.config = ((), {})
            return {}
        old_sig, old_entries = self._caches.config
        if old_sig and old_sig[0] == data_sig:
            # the YAML itself is unchanged: re-check only the files its voices point at
            if all(entry.signature[1:] == self._config_file_sigs(entry) for entry in old_entries.values()):
                return old_entries
        self._caches.reported.pop("config:", None)
        try:
            data = read_yaml_mapping(path)
        except VoiceError as err:
            self._report("config:", str(err))
            self._caches.config = ((data_sig,), {})
            return {}
        if set(data) == {"voices"} and isinstance(data["voices"], dict):
            data = data["voices"]
        entries: dict[str, VoiceEntry] = {}
        for name, spec in data.items():
            problem = name_problem(name)
            if problem:
                self._report(f"config:{name}", f"{path}: {problem}")
                continue
            key = name_key(name)
            if key in entries:
                self._report(f"config:{name}", f"{path}: voice {name!r} is listed twice (names ignore case)")
                continue
            entries[key] = self._config_entry(path, name, spec, data_sig)
        self._caches.config = ((data_sig,), entries)
        return entries

    def _config_entry(self, path: Path, name: str, spec, data_sig) -> VoiceEntry:
        base = path.parent
        where = f"{path}: voice {name!r}"

        def resolve(value) -> Path | None:
            return None if value in (None, "") else (base / Path(str(value)).expanduser())

        spec = spec if isinstance(spec, dict) else {}
        entry = VoiceEntry(
            name=name,
            kind="+".join(k for k, f in (("prompt", "audio"), ("state", "state")) if spec.get(f)) or "unknown",
            languages=self.default_languages,
            description=str(spec.get("description") or ""),
            audio=resolve(spec.get("audio")),
            text_file=resolve(spec.get("text_file")),
            state=resolve(spec.get("state")),
            codes=self.voices_dir / CONFIG_CACHE_DIR / f"{name_key(name)}.{PROMPT_CODES}",
            source=f"listed in {path}",
            defined_in=path,
        )
        entry = replace(entry, signature=(data_sig, *self._config_file_sigs(entry)))
        try:
            if not spec:
                raise VoiceError(f"{where} must be a mapping with audio + text, and/or state")
            unknown = set(spec) - {"audio", "text", "text_file", "state", "languages", "language", "description"}
            if unknown:
                raise VoiceError(f"{where}: unknown settings {', '.join(sorted(map(str, unknown)))}")
            if entry.kind == "unknown":
                raise VoiceError(f"{where} needs audio + text, or state")
            text = spec.get("text")
            if text is None and entry.text_file is not None:
                try:
                    text = entry.text_file.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as err:
                    raise VoiceError(f"{where}: cannot read {entry.text_file}: {err}") from err
            entry = replace(
                entry,
                languages=parse_languages(spec.get("languages", spec.get("language")), self.default_languages, where),
                text=None if text is None else " ".join(str(text).split()),
            )
            self._check_entry(entry, audio_required=True, where=where)
        except VoiceError as err:
            return replace(entry, problem=str(err))
        return entry

    @staticmethod
    def _config_file_sigs(entry: VoiceEntry) -> tuple:
        return tuple(None if p is None else _stat(p) for p in (entry.audio, entry.state, entry.text_file))

    def _check_entry(self, entry: VoiceEntry, audio_required: bool, where: str | None = None) -> None:
        """Cheap checks at scan time: the files a kind needs exist, the state fits the model."""
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
            tensors, _ = load_tensors(entry.state)
            config = self.model.config if self.model is not None else None
            inspect_state_tensors(tensors, str(entry.state), config)

    def _info(self, key: str, entry: VoiceEntry) -> VoiceInfo:
        problem = entry.problem
        failed = self._caches.failed.get(key)
        if not problem and failed is not None and failed[0] == entry.signature:
            problem = failed[1]
        description = entry.description or _default_description(entry)
        return VoiceInfo(entry.name, description, entry.languages, problem is None, entry.kind, problem or "")

    def _report(self, key: str, message: str, quiet: bool = False) -> None:
        """Log a problem once (and again only when it changes)."""
        if self._caches.reported.get(key) != message:
            self._caches.reported[key] = message
            if self.log_problems:
                _LOGGER.log(logging.DEBUG if quiet else logging.WARNING, "%s", message)

    def _forget(self, key: str) -> None:
        self._caches.loaded.pop(key, None)
        self._caches.failed.pop(key, None)
        self._caches.reported.pop(key, None)

    def _unknown_message(self, name: str | None, entries: dict[str, VoiceEntry]) -> str:
        available = sorted(e.name for k, e in entries.items() if self._info(k, e).installed)
        listing = (
            ", ".join(available)
            if available
            else "none (add one with: wyoming-lina voice add NAME --audio CLIP --text TRANSCRIPT)"
        )
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
            codes = self._prompt_codes(entry)
            self._check_codes(codes, entry.name)
            text = entry.text
            self._check_transcript(text, f"voice {entry.name!r}: ")
        initial_state = None
        if entry.has_state:
            if self.model is None:
                raise VoiceError(f"voice {entry.name!r} has a tuned state; loading it needs the model")
            from ..model import load_speaker_state

            initial_state = load_speaker_state(entry.state, self.model)
        return Voice(
            name=entry.name,
            languages=entry.languages,
            description=entry.description or _default_description(entry),
            prompt_codes=codes,
            prompt_text=text,
            initial_state=initial_state,
            frames_per_char=entry.frames_per_char,
        )

    def _prompt_codes(self, entry: VoiceEntry) -> torch.Tensor:
        """The clip's codes: from the cache when it matches the clip and codec, else encoded now."""
        cached, meta = None, {}
        if entry.codes is not None and entry.codes.is_file():
            try:
                tensors, meta = load_tensors(entry.codes)
                cached = tensors["codes"].long().reshape(-1)
                if meta.get("format") != CODES_FORMAT:
                    cached = None
            except (VoiceError, KeyError) as err:
                _LOGGER.debug("ignoring unreadable code cache %s: %s", entry.codes, err)
                cached = None
        audio_present = entry.audio is not None and entry.audio.is_file()
        if cached is not None and meta.get("origin") == "generated" and not audio_present:
            return cached  # a generated voice (the default voice): the codes are the voice
        if not audio_present:
            raise VoiceError(f"voice {entry.name!r}: the clip {entry.audio} is missing")
        clip_sha = sha256_file(entry.audio)
        if cached is not None and meta.get("clip_sha256") == clip_sha:
            if meta.get("origin") == "generated":
                return cached  # the clip is the decoded codes, unchanged: the codes stay authoritative
            if self.codec is None or meta.get("codec") == codec_fingerprint(self.codec):
                return cached
        if self.codec is None:
            raise VoiceError(
                f"voice {entry.name!r}: its clip has not been encoded yet and no codec is loaded "
                "(the server encodes it at start-up, or add the voice with the codec options)"
            )
        try:
            # a voice folder's clip was trimmed when it was added; a clip from the YAML file is raw
            codes = self._encode_clip(entry.audio, trim=entry.folder is None, name=entry.name)
        except AudioFileError as err:
            raise VoiceError(f"voice {entry.name!r}: {err}") from err
        try:
            entry.codes.parent.mkdir(parents=True, exist_ok=True)
            self._write_codes(entry.codes, codes, "encoded", clip_sha)
        except OSError as err:
            with self._lock:
                self._report(
                    f"cache:{entry.name}", f"voice {entry.name!r}: cannot cache its codes in {entry.codes}: {err}"
                )
        _LOGGER.info("voice %r: encoded its clip (%d codes)", entry.name, len(codes))
        return codes

    def _encode_clip(self, path: Path, trim: bool, name: str | None = None) -> torch.Tensor:
        """The one way a clip becomes prompt codes (at ``add`` and when the cache is stale)."""
        clip = prepare_clip(path, PROMPT_LIMITS, trim=trim)
        if name is not None:
            for warning in clip.warnings:
                _LOGGER.warning("voice %r: %s", name, warning)
        return self.codec.encode_clip(clip.samples, CODEC_RATE).long().reshape(-1).cpu()

    def _write_codes(self, path: Path, codes: torch.Tensor, origin: str, clip_sha: str | None) -> None:
        meta = {"format": CODES_FORMAT, "origin": origin, "frames": str(int(codes.numel()))}
        if clip_sha:
            meta["clip_sha256"] = clip_sha
        if self.codec is not None:
            meta["codec"] = codec_fingerprint(self.codec)
        save_tensors(path, {"codes": codes.long().reshape(-1).cpu()}, meta)

    def _check_codes(self, codes: torch.Tensor, name: str) -> None:
        if codes.numel() == 0:
            raise VoiceError(f"voice {name!r}: its clip encodes to no codes")
        limit = self.model.config.n_codes if self.model is not None else None
        if limit is None and self.codec is not None:
            limit = self.codec.codebook_size
        if int(codes.min()) < 0 or (limit is not None and int(codes.max()) >= limit):
            raise VoiceError(f"voice {name!r}: its codes lie outside the model's {limit}-code vocabulary")

    def _check_transcript(self, text: str | None, prefix: str = "") -> None:
        """With a tokenizer: the transcript must survive normalisation and tokenisation."""
        if self.tokenizer is None or not text:
            return
        from ..text import normalize_text

        try:
            spoken = normalize_text(text, self.tokenizer)
            self.tokenizer.encode(spoken)
        except LinaError as err:
            raise VoiceError(f"{prefix}the transcript cannot be read by the model: {err}") from err
        if not spoken.strip(" .,;:!?-'\""):
            raise VoiceError(f"{prefix}the transcript has nothing the model can say")

    def _read_state_file(self, path: Path) -> dict[str, torch.Tensor]:
        if not path.is_file():
            raise VoiceError(f"speaker state file not found: {path}")
        tensors, _ = load_tensors(path)
        inspect_state_tensors(tensors, path.name, self.model.config if self.model is not None else None)
        return {k: v.float().contiguous() for k, v in sorted(tensors.items())}

    def _existing_for_write(self, name: str, overwrite: bool) -> Path | None:
        """The folder ``name`` would replace (``overwrite``), or VoiceError for a clash."""
        with self._lock:
            entry = self._scan().get(name_key(name))
        if entry is None:
            return None
        if entry.folder is None:
            raise VoiceError(f"voice {entry.name!r} is already defined in {entry.defined_in}")
        if not overwrite:
            same = "" if entry.name == name else f" (names ignore case: {entry.name!r})"
            raise VoiceError(f"voice {name!r} already exists{same}; remove it first or use --overwrite")
        return entry.folder

    def _move_into_place(self, tmp: Path, name: str, existing: Path | None) -> None:
        trash = None
        if existing is not None:
            trash = self.voices_dir / f".trash-{existing.name}-{uuid.uuid4().hex[:8]}"
            os.rename(existing, trash)
        try:
            os.rename(tmp, self.voices_dir / name)
        except OSError as err:
            if trash is not None:
                os.rename(trash, existing)
            raise VoiceError(f"cannot create voice {name!r}: {err}") from err
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        with self._lock:
            self._forget(name_key(name))


def _speaking_rate(value, where: Path) -> float | None:
    """voice.yaml's ``frames_per_char`` (written by tuning): a number in the plausible range."""
    from ..engine.lengths import MAX_FRAMES_PER_CHAR, MIN_FRAMES_PER_CHAR

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VoiceError(f"{where}: frames_per_char must be a number, not {value!r}")
    if not MIN_FRAMES_PER_CHAR <= value <= MAX_FRAMES_PER_CHAR:
        raise VoiceError(f"{where}: frames_per_char must be between {MIN_FRAMES_PER_CHAR} and {MAX_FRAMES_PER_CHAR}")
    return float(value)


def _unusable(entry: VoiceEntry, problem: str) -> str:
    """The one log line for a voice's problem (the same from list() and get(): logged once)."""
    return f"voice {entry.name!r} is not usable: {problem}"


def _without_cache(entry: VoiceEntry) -> tuple:
    """A folder voice's signature without its prompt-code cache."""
    if entry.folder is None:
        return entry.signature
    return tuple(sig for name, sig in zip(_FOLDER_FILES, entry.signature, strict=True) if name != PROMPT_CODES)


def _default_description(entry: VoiceEntry) -> str:
    how = {"prompt": "cloned from a clip", "state": "tuned voice", "prompt+state": "tuned voice with a clip"}
    return f"{entry.name} ({how.get(entry.kind, 'voice')})"
