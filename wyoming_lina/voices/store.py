"""The voice store: every voice in ``<data_dir>/voices/<name>/``, plus voices listed in a YAML file.

A thin facade over the parts that do the work: the catalog (``catalog.py``: scanning, listing,
loading, the caches), the voice folders (``storage.py``: made complete under a temporary name,
renamed into place), the prompt encoder (``encoding.py``: clip -> codes, the code cache),
what a new folder holds (``making.py``: the checked clip, the state, generated codes), and the
checks of what a voice is made from (``transcripts.py``, ``metadata.py``). Errors say what is
wrong; how to fix it with command-line options is the CLI's to add (``cli/``).

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
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LinaError, VoiceError
from .catalog import VoiceCatalog
from .details import voice_details
from .encoding import PromptEncoder
from .files import (
    PROMPT_AUDIO,
    PROMPT_CODES,
    STATE_FILE,
    VOICE_FILE,
    VOICES_DIR,
    inspect_state_tensors,
    read_yaml_mapping,
    save_tensors,
    write_yaml,
)
from .making import write_generated, write_prompt, write_state_copy
from .metadata import VoiceMeta, bounded_source, check_description, parse_languages, parse_voice_meta
from .names import name_key, validate_name
from .scanning import ScanContext, VoiceEntry
from .storage import VoiceExistsError, VoiceFolders
from .transcripts import check_transcript
from .voice import Voice, VoiceInfo

__all__ = ["AddResult", "VoiceEntry", "VoiceExistsError", "VoiceStore"]

_LOGGER = logging.getLogger(__name__)
# what a tuned state keeps of an existing voice.yaml (every one checked and bounded on reading)
_KEPT_FIELDS = ("kind", "languages", "description", "created", "source", "text", "frames_per_char", "generated")


@dataclass(frozen=True)
class AddResult:
    info: VoiceInfo
    warnings: tuple[str, ...] = ()
    folder: Path | None = None


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
        self.config_path = Path(config_path) if config_path is not None else None
        self.default_languages = tuple(default_languages)
        self._folders = VoiceFolders(self.voices_dir)
        self._log_problems = log_problems
        self.attach(codec=codec, model=model, tokenizer=tokenizer)

    @property
    def codec(self):
        return self._encoder.codec

    @property
    def model(self):
        return self._encoder.model

    @property
    def tokenizer(self):
        return self._catalog.tokenizer

    def attach(self, *, codec=None, model=None, tokenizer=None) -> None:
        """The model parts (a server lists voices before they are loaded, then attaches them):
        a new catalog checks and loads every voice with them."""
        self._encoder = PromptEncoder(codec, model)
        ctx = ScanContext(self.voices_dir, self.default_languages, model.config if model is not None else None)
        self._catalog = VoiceCatalog(
            ctx, self.config_path, self._encoder, tokenizer=tokenizer, log_problems=self._log_problems
        )

    # --- reading ---------------------------------------------------------------------------
    def list(self) -> list[VoiceInfo]:
        """Every voice, rescanned from disk; broken ones with ``installed=False``."""
        return self._catalog.list()

    def __contains__(self, name: object) -> bool:
        return name in self._catalog

    def get(self, name: str | None) -> Voice:
        """The voice called ``name`` (any case). UnknownVoiceError names the voices there are;
        VoiceError says what is wrong with a broken one."""
        return self._catalog.get(name)

    def loaded(self, name: str | None) -> Voice | None:
        """What ``get(name)`` would return when no file needs reading for it (a loaded voice whose
        files are unchanged: a few ``stat`` calls), else None; for the server's event loop."""
        return self._catalog.loaded(name)

    def warm(self) -> list[VoiceInfo]:
        """Load every voice now (encoding clips whose codes are not cached); call at start-up,
        before serving, so no request waits for an encode. Failures are logged, not raised.
        What killed writers left in the voices folder long ago is removed first."""
        for leftover in self._folders.clean_leftovers():
            _LOGGER.info("removed %r from the voices folder (left by an interrupted write)", leftover)
        for info in self.list():
            if info.installed:
                try:
                    self.get(info.name)
                except LinaError:
                    pass  # already logged once by get()
        return self.list()

    def entry(self, name: str) -> VoiceEntry:
        """The scanned record of a voice (also of a broken one)."""
        return self._catalog.entry(name)

    def show(self, name: str) -> dict:
        """Everything known about a voice, for ``voice show`` (works for broken voices too)."""
        with self._catalog.lock:
            entry = self._catalog.entry(name)
            info = self._catalog.info(name_key(entry.name), entry)
        return voice_details(entry, info)

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
            raise VoiceError("a voice needs a clip with its transcript, or a speaker state")
        if audio is not None and not (text or "").strip():
            raise VoiceError("a clip needs its transcript: exactly the words spoken in it")
        if audio is None and text:
            raise VoiceError("a transcript belongs to a clip: give the clip too")
        langs = parse_languages(list(languages) if languages else None, self.default_languages, "languages")
        description = check_description(description.strip())
        if audio is not None:
            text = " ".join(text.split())  # one line, single spaces
            check_transcript(text, self.tokenizer, self._text_len())
        existing = self._existing_for_write(name, overwrite)
        warnings: list[str] = []
        meta: dict = {"kind": "", "languages": list(langs), "description": description, "created": _now()}
        kinds, sources = [], []
        with self._folders.staging(name) as tmp:
            if audio is not None:
                clip_warnings, source = write_prompt(tmp, name, audio, text, self._encoder)
                warnings += clip_warnings
                kinds.append("prompt")
                sources.append(source)
            if state is not None:
                sources.append(write_state_copy(tmp, Path(state), self._model_config()))
                kinds.append("state")
            meta["kind"] = "+".join(kinds)
            meta["source"] = bounded_source("; ".join(sources))
            write_yaml(tmp / VOICE_FILE, meta)
            self._commit(tmp, name, existing)
        _LOGGER.info("added voice %r (%s)", name, meta["kind"])
        return AddResult(self._info(name), tuple(warnings), self._folders.path(name))

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
        exist_ok: bool = False,
    ) -> VoiceInfo:
        """Store a prompt voice whose codes were generated by the model (the default voice).

        The codes are the voice; ``samples`` (their decoding, 24 kHz) is kept as prompt.wav for
        listening. Unless someone replaces that clip, the codes are never re-encoded. With
        ``exist_ok`` a voice of that name (made meanwhile by another process) is kept as it is
        and returned; without it the name being taken is VoiceExistsError."""
        validate_name(name)
        self._encoder.check_codes(codes, name)
        description = check_description(description)
        try:
            self._existing_for_write(name, overwrite=False)
        except VoiceExistsError:
            if exist_ok:
                return self._info(name)
            raise
        with self._folders.staging(name) as tmp:
            write_generated(tmp, codes, text, samples, self._encoder)
            meta = {
                "kind": "prompt",
                "languages": list(languages or self.default_languages),
                "description": description,
                "created": _now(),
                "source": bounded_source(source),
                **(extra or {}),
            }
            write_yaml(tmp / VOICE_FILE, meta)
            try:
                self._commit(tmp, name, None)
            except VoiceExistsError:
                if not exist_ok:
                    raise
                _LOGGER.info("voice %r was made meanwhile by another process: keeping that one", name)
        return self._info(name)

    def remove(self, name: str) -> VoiceInfo:
        """Delete a voice folder (not a voice from the YAML file: edit that file)."""
        with self._catalog.lock:
            entry = self._catalog.entry(name)
            if entry.folder is None:
                raise VoiceError(f"voice {entry.name!r} is defined in {entry.defined_in}; remove it from that file")
            info = self._catalog.info(name_key(entry.name), entry)
            self._folders.remove(entry.folder)
            self._catalog.forget(name_key(entry.name))
            _LOGGER.info("removed voice %r", entry.name)
            return info

    def folder_for_new_state(self, name: str) -> Path:
        """The folder a tuned state for ``name`` goes to: the existing voice's (any case) or a new
        one. Refuses voices defined in the YAML file."""
        validate_name(name)
        with self._catalog.lock:
            entry = self._catalog.scan().get(name_key(name))
            if entry is not None and entry.folder is None:
                raise VoiceError(f"voice {entry.name!r} is defined in {entry.defined_in}; choose another name")
            folder = entry.folder if entry is not None else self._folders.path(name)
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
        inspect_state_tensors(tensors, "tuned state", self._model_config())
        description = check_description(description) if description is not None else None
        raw, old = {}, VoiceMeta(languages=self.default_languages)
        if (folder / VOICE_FILE).is_file():
            try:
                raw = read_yaml_mapping(folder / VOICE_FILE)
                old = parse_voice_meta(raw, folder / VOICE_FILE, self.default_languages)
            except VoiceError:
                raw = {}  # a broken voice.yaml is replaced
        has_prompt = "prompt" in (raw.get("kind") or "") and (
            (folder / PROMPT_AUDIO).is_file() or (folder / PROMPT_CODES).is_file()
        )
        save_tensors(folder / STATE_FILE, {k: v.float() for k, v in tensors.items()}, metadata)
        meta = {k: raw[k] for k in _KEPT_FIELDS if k in raw}  # known, bounded fields only
        meta.update(
            {
                "kind": "prompt+state" if has_prompt else "state",
                "languages": list(languages or old.languages),
                "description": description if description is not None else old.description,
                "created": old.created or _now(),
                "source": bounded_source(f"{old.source}; {source}" if old.source and has_prompt else source),
            }
        )
        if frames_per_char is not None:
            meta["frames_per_char"] = round(float(frames_per_char), 3)
        write_yaml(folder / VOICE_FILE, meta)
        return self._info(folder.name)

    # --- helpers ---------------------------------------------------------------------------
    def _model_config(self):
        return self.model.config if self.model is not None else None

    def _text_len(self) -> int | None:
        return self.model.config.max_text_len if self.model is not None else None

    def _info(self, name: str) -> VoiceInfo:
        with self._catalog.lock:
            key = name_key(name)
            return self._catalog.info(key, self._catalog.scan()[key])

    def _existing_for_write(self, name: str, overwrite: bool) -> Path | None:
        """The folder ``name`` would replace (``overwrite``), or VoiceError for a clash."""
        with self._catalog.lock:
            entry = self._catalog.scan().get(name_key(name))
        if entry is None:
            return None
        if entry.folder is None:
            raise VoiceError(f"voice {entry.name!r} is already defined in {entry.defined_in}")
        if not overwrite:
            same = "" if entry.name == name else f" (names ignore case: {entry.name!r})"
            raise VoiceExistsError(f"voice {name!r} already exists{same}", entry.name)
        return entry.folder

    def _commit(self, tmp: Path, name: str, existing: Path | None) -> None:
        self._folders.commit(tmp, name, existing)
        self._catalog.forget(name_key(name))
