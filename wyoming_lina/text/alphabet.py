"""Which characters a text tokenizer can say.

The Lina tokenizer has no ``[UNK]`` token: one character outside its vocabulary makes the
whole encode fail. Normalisation therefore needs to ask, character by character, "can the
tokenizer take this?". This module answers that question for the built-in Lina alphabet,
for a plain set of characters, or for anything with an ``is_supported(ch)`` method (a
:class:`~wyoming_lina.text.tokenizer.LinaTokenizer`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

# Single-character tokens of upstream's bpe256.json (after its Lowercase normaliser).
# tests/test_text_tokenizer.py checks this against the fixture file.
LINA_ALPHABET: frozenset[str] = frozenset(" !\"'(),-./:;?[]abcdefghijklmnopqrstuvwxyz{}¯æèéêñôœ—")


CACHE_LIMIT = 4096  # characters remembered per alphabet


@runtime_checkable
class SupportsCharacters(Protocol):
    """Anything that can tell whether one character is speakable."""

    def is_supported(self, ch: str) -> bool: ...


class CharacterSet:
    """A fixed set of characters, taken after lowercasing (as Lina tokenizers do)."""

    def __init__(self, characters: Iterable[str]) -> None:
        self.characters = frozenset(characters)
        self._cache: dict[str, bool] = {}

    def is_supported(self, ch: str) -> bool:
        known = self._cache.get(ch)
        if known is None:
            lowered = ch.lower()
            known = bool(lowered) and all(c in self.characters for c in lowered)
            if len(self._cache) < CACHE_LIMIT:  # arbitrary client text must not grow it forever
                self._cache[ch] = known
        return known

    def __repr__(self) -> str:
        return f"CharacterSet({''.join(sorted(self.characters))!r})"


DEFAULT_ALPHABET = CharacterSet(LINA_ALPHABET)


def as_alphabet(alphabet: SupportsCharacters | Iterable[str] | None) -> SupportsCharacters:
    """Normalise the accepted forms (None, a tokenizer, a set of characters) to one type."""
    if alphabet is None:
        return DEFAULT_ALPHABET
    if isinstance(alphabet, SupportsCharacters):
        return alphabet
    return CharacterSet(alphabet)
