"""Characters the vocabulary has, stand-ins for some it lacks, and names for the rest.

Lina's vocabulary is a small alphabet: accented letters it lacks lose their accent, a few
letters are transliterated (ß -> ss), and everything else (emoji, other scripts) is dropped
with a DEBUG log. When nothing sayable is left, the caller names what the text held.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable

from .alphabet import SupportsCharacters

_LOGGER = logging.getLogger("wyoming_lina.text")

_TRANSLITERATION = {
    "ß": "ss", "ẞ": "SS", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d",
    "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i", "æ": "ae", "Æ": "Ae", "œ": "oe", "Œ": "Oe", "ĸ": "k",
}  # fmt: skip


def _replacement(ch: str, alphabet: SupportsCharacters) -> str | None:
    """A supported stand-in for ``ch`` ('ü' -> 'u', 'ß' -> 'ss'), or None."""
    if ch.isspace() or unicodedata.category(ch) == "Cc":
        return " "
    candidates = [_TRANSLITERATION.get(ch, "")]
    stripped = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    candidates.append(stripped)
    for candidate in candidates:
        if candidate and all(alphabet.is_supported(c) for c in candidate):
            return candidate
    return None


def supported_characters(text: str, alphabet: SupportsCharacters) -> str:
    """Keep what the vocabulary has, transliterate what it can, drop the rest (DEBUG log)."""
    out: list[str] = []
    dropped: set[str] = set()
    for ch in text:
        if alphabet.is_supported(ch):
            out.append(ch)
            continue
        stand_in = _replacement(ch, alphabet)
        if stand_in is None:
            dropped.add(ch)
            out.append(" " if unicodedata.category(ch)[0] in "PSZ" else "")
        else:
            out.append(stand_in)
    if dropped:
        _LOGGER.debug("Dropped characters the model cannot say: %s", _describe(dropped))
    return "".join(out)


def _describe(characters: Iterable[str]) -> str:
    return ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in sorted(characters))


def _is_content(ch: str) -> bool:
    return not ch.isspace() and unicodedata.category(ch)[0] not in "PZC"


def has_content(text: str) -> bool:
    """Whether ``text`` holds anything besides spaces, punctuation and control characters."""
    return any(_is_content(ch) for ch in text)


def name_characters(text: str, limit: int = 5) -> str:
    """The content characters of ``text`` by name, for a message: "'你' (CJK UNIFIED IDEOGRAPH-4F60), ..."."""
    found = sorted({ch for ch in text if _is_content(ch)})
    named = [f"{ch!r} ({unicodedata.name(ch, f'U+{ord(ch):04X}')})" for ch in found[:limit]]
    return ", ".join(named) + (f" and {len(found) - limit} more" if len(found) > limit else "")
