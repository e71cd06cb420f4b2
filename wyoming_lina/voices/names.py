"""Voice names: what a user may call a voice, and how names are compared.

A name becomes a folder under ``<data_dir>/voices`` and the ``voice_id`` Home Assistant
sends back, so it must be a safe, portable file name: ASCII letters, digits, ``-``, ``_``
and ``.`` (never first, so no hidden folders, ``.`` or ``..``), at most 64 characters.
Names are compared case-insensitively (``Alice`` and ``alice`` are one voice) because
case-insensitive file systems (macOS, Windows shares) cannot hold both.
"""

from __future__ import annotations

import re

from ..errors import VoiceError

MAX_NAME_LENGTH = 64
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
# Device names that Windows (and Samba shares) refuse as file names, with any extension.
_RESERVED = frozenset({"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)})


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a voice name, or None when it can (a pure check, no disk)."""
    if not isinstance(name, str):
        return f"a voice name must be text, not {type(name).__name__}"
    if not name:
        return "a voice name cannot be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"voice name {name[:20]!r}... is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"voice name {name!r} must not contain path separators"
    if not _NAME_RE.fullmatch(name):
        return f"voice name {name!r} may only use letters a-z, digits, '-', '_' and '.', and must not start with '.'"
    if name.split(".")[0].lower() in _RESERVED:
        return f"voice name {name!r} is reserved by some file systems; choose another"
    return None


def validate_name(name: object) -> str:
    """Return ``name`` unchanged, or raise VoiceError saying what is wrong with it."""
    problem = name_problem(name)
    if problem:
        raise VoiceError(problem)
    return name  # type: ignore[return-value]


def name_key(name: str) -> str:
    """The key names are compared by (case-insensitive)."""
    return name.casefold()
