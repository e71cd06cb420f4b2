"""Which voice speaks when a request names none, as chosen on the studio page.

The choice is kept in ``<data_dir>/settings.yaml`` (``default_voice: alice``) so it survives a
restart. Precedence, one place: ``--voice`` (command line or YAML config) > the studio's choice
> the built-in ``default`` voice. A choice whose voice is gone or broken is skipped (logged
once), so a removed voice never leaves Home Assistant without an answer.

``DefaultingVoices`` is what the Synthesizer asks for voices: ``get("")`` applies the
precedence, every other call goes to the store.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import yaml

from ..errors import LinaError, VoiceError
from .files import atomic_write_text, read_yaml_mapping
from .names import name_key, validate_name
from .problems import printable
from .voice import Voice, VoiceInfo

_LOGGER = logging.getLogger(__name__)
SETTINGS_FILE = "settings.yaml"


class VoicePreferences:
    """``<data_dir>/settings.yaml``: read again when it changes, written atomically."""

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / SETTINGS_FILE
        self._lock = threading.Lock()
        self._cached: tuple[object, dict] = (None, {})

    def _signature(self):
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def unchanged(self) -> bool:
        """The file is as when it was last read (or still absent): asking for the default voice
        now costs one ``stat``, no read."""
        return self._signature() == self._cached[0]

    def _read(self) -> dict:
        key = self._signature()
        if key is None:
            self._cached = (None, {})
            return {}
        with self._lock:
            if self._cached[0] == key:
                return self._cached[1]
            try:
                data = read_yaml_mapping(self.path, what="settings file")
            except VoiceError as err:
                _LOGGER.warning("ignoring the settings: %s", printable(err))
                data = {}
            self._cached = (key, data)
            return data

    def default_voice(self) -> str | None:
        value = self._read().get("default_voice")
        return value if isinstance(value, str) and value else None

    def set_default_voice(self, name: str | None) -> None:
        """Choose the default voice (None: no choice, the built-in voice speaks)."""
        if name is not None:
            validate_name(name)
        data = dict(self._read())
        if name is None:
            data.pop("default_voice", None)
        else:
            data["default_voice"] = name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, yaml.safe_dump(data, sort_keys=True))


class DefaultingVoices:
    """The store, with the default voice decided by ``--voice`` > the studio's choice > ``fallback``."""

    def __init__(self, store, preferences: VoicePreferences, *, fixed: str | None, fallback: str):
        self.store = store
        self.preferences = preferences
        self.fixed = fixed  # --voice: when given, the studio cannot change the default
        self.fallback = fallback
        self._reported: str | None = None

    def list(self) -> list[VoiceInfo]:
        return self.store.list()

    def get(self, name: str | None) -> Voice:
        if name:
            return self.store.get(name)
        chosen = self.chosen()
        if chosen:
            try:
                return self.store.get(chosen)
            except LinaError as err:
                self._report(f"the chosen default voice {chosen!r} cannot be used ({err}); using {self.fallback!r}")
        return self.store.get(self.fixed or self.fallback)

    def loaded(self, name: str | None) -> Voice | None:
        """``get(name)`` when no file needs reading for it (``VoiceStore.loaded``), else None."""
        if name:
            return self.store.loaded(name)
        if self.fixed:
            return self.store.loaded(self.fixed)
        if not self.preferences.unchanged():
            return None
        return self.store.loaded(self.chosen() or self.fallback)  # a chosen voice not loaded: None, and get() decides

    def chosen(self) -> str | None:
        """The studio's choice, unless ``--voice`` decides."""
        return None if self.fixed else self.preferences.default_voice()

    def default_name(self, infos: list[VoiceInfo] | None = None) -> str:
        """The name of the voice that speaks when a request names none (as shown on the page)."""
        if self.fixed:
            return self.fixed
        chosen = self.chosen()
        usable = {name_key(i.name): i.name for i in (infos if infos is not None else self.store.list()) if i.installed}
        if chosen and name_key(chosen) in usable:
            return usable[name_key(chosen)]
        return self.fallback

    def _report(self, message: str) -> None:
        if self._reported != message:
            self._reported = message
            _LOGGER.warning("%s", printable(message))
