"""The voice store: every voice in ``<data_dir>/voices/<name>/``, plus voices listed in a YAML file.

A thin facade over the parts that do the work: the catalog (``catalog.py``: scanning, listing,
loading, the caches), the voice folders (``storage.py``: made complete under a temporary name,
renamed into place), the prompt encoder (``encoding.py``: clip -> codes, the code cache) and
the checks of what a voice is made from (``clips.py``, ``transcripts.py``). Errors say what is
wrong; how to fix it with command-line options is the CLI's to add (``cli.py``).

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
from .clips import PROMPT_LIMITS, prepare_clip, speaking_rate_warning, write_clip
from .details import voice_details
from .encoding import PromptEncoder
from .files import (
    PROMPT_AUDIO,
    PROMPT_CODES,
    PROMPT_TEXT,
    STATE_FILE,
    VOICE_FILE,
    VOICES_DIR,
    atomic_write_text,
    inspect_state_tensors,
    load_tensors,
    parse_languages,
    read_yaml_mapping,
    save_tensors,
    sha256_file,
    write_yaml,
)
from .names import name_key, validate_name
from .scanning import ScanContext, VoiceEntry
from .storage import VoiceFolders
from .transcripts import check_transcript
from .voice import Voice, VoiceInfo

__all__ = ["AddResult", "VoiceEntry", "VoiceExistsError", "VoiceStore"]

_LOGGER = logging.getLogger(__name__)


class VoiceExistsError(VoiceError):
    """The name is taken (in any case): the caller may replace the voice or choose another name."""

    def __init__(self, message: str, existing: str):
        super().__init__(message)
        self.existing = existing


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
        self._encoder = PromptEncoder(codec, model)
        self._folders = VoiceFolders(self.voices_dir)
        ctx = ScanContext(self.voices_dir, self.default_languages, model.config if model is not None else None)
        self._catalog = VoiceCatalog(ctx, self.config_path, self._encoder, tokenizer=tokenizer, log_problems=log_problems)

    @property
    def codec(self):
        return self._encoder.codec

    @property
    def model(self):
        return self._encoder.model

    @property
    def tokenizer(self):
        return self._catalog.tokenizer

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
        existing = self._existing_for_write(name, overwrite)
        warnings: list[str] = []
        meta: dict = {"kind": "", "languages": list(langs), "description": description.strip(), "created": _now()}
        kinds, sources = [], []
        with self._folders.staging(name) as tmp:
            if audio is not None:
                text = " ".join(text.split())  # one line, single spaces
                check_transcript(text, self.tokenizer)
                clip = prepare_clip(audio, PROMPT_LIMITS)
                warnings += clip.warnings
                rate_warning = speaking_rate_warning(text, clip.seconds)
                if rate_warning:
                    warnings.append(rate_warning)
                write_clip(tmp / PROMPT_AUDIO, clip.samples)
                atomic_write_text(tmp / PROMPT_TEXT, text + "\n")
                if self.codec is not None:
                    codes = self._encoder.encode_clip(tmp / PROMPT_AUDIO, trim=False)
                    self._encoder.check_codes(codes, name)
                    self._encoder.write_codes(tmp / PROMPT_CODES, codes, "encoded", sha256_file(tmp / PROMPT_AUDIO))
                kinds.append("prompt")
                sources.append(
                    f"clip {Path(audio).name} ({clip.source_rate} Hz, {clip.source_channels} channel(s), "
                    f"{clip.source_seconds:.1f} s; {clip.seconds:.1f} s after trimming silence)"
                )
            if state is not None:
                save_tensors(tmp / STATE_FILE, self._read_state_file(Path(state)))
                kinds.append("state")
                sources.append(f"speaker state {Path(state).name}")
            meta["kind"] = "+".join(kinds)
            meta["source"] = "; ".join(sources)
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
    ) -> VoiceInfo:
        """Store a prompt voice whose codes were generated by the model (the default voice).

        The codes are the voice; ``samples`` (their decoding, 24 kHz) is kept as prompt.wav for
        listening. Unless someone replaces that clip, the codes are never re-encoded."""
        validate_name(name)
        self._encoder.check_codes(codes, name)
        self._existing_for_write(name, overwrite=False)  # raises when the name is taken
        with self._folders.staging(name) as tmp:
            clip_sha = None
            if samples is not None:
                write_clip(tmp / PROMPT_AUDIO, samples)
                clip_sha = sha256_file(tmp / PROMPT_AUDIO)
            self._encoder.write_codes(tmp / PROMPT_CODES, codes, "generated", clip_sha)
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
            self._commit(tmp, name, None)
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
        return self._info(folder.name)

    # --- helpers ---------------------------------------------------------------------------
    def _info(self, name: str) -> VoiceInfo:
        with self._catalog.lock:
            key = name_key(name)
            return self._catalog.info(key, self._catalog.scan()[key])

    def _read_state_file(self, path: Path) -> dict[str, torch.Tensor]:
        if not path.is_file():
            raise VoiceError(f"speaker state file not found: {path}")
        tensors, _ = load_tensors(path)
        inspect_state_tensors(tensors, path.name, self.model.config if self.model is not None else None)
        return {k: v.float().contiguous() for k, v in sorted(tensors.items())}

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
