"""What text becomes before the model sees it: sentences, words, token ids.

Order matters, and it is: split the raw text, then normalise each sentence.

* The splitter needs the raw cues. "Dr. Smith" and "3.5" stay together because
  sentence-stream sees an abbreviation and a decimal; line breaks and list markers mark
  sentences. Normalising first would remove the line breaks and turn the cues into words.
* Normalisation needs whole sentences. Streamed fragments are cut anywhere ("3." then
  "5 km"), so a number, date or abbreviation can only be read once its sentence is
  complete. Per sentence it is also cheap, so the first sentence is spoken early.
* Normalising can lengthen a piece ("$1,234.56" becomes seven words), so each normalised
  sentence is checked against ``max_chars`` again and re-split at clause boundaries.

For streams, feed fragments to a :class:`SentenceChunker` and pass each sentence it
returns to :func:`prepare_sentence`; for whole texts :func:`prepare_text` does both.
"""

from __future__ import annotations

from collections.abc import Iterable

from .alphabet import LINA_ALPHABET, CharacterSet, SupportsCharacters
from .characters import has_content, name_characters
from .normalize import normalize_text
from .sentences import DEFAULT_MAX_CHARS, SentenceChunker, split_long, split_sentences
from .tokenizer import LinaTokenizer

__all__ = [
    "DEFAULT_MAX_CHARS",
    "LINA_ALPHABET",
    "CharacterSet",
    "LinaTokenizer",
    "SentenceChunker",
    "SupportsCharacters",
    "has_content",
    "name_characters",
    "normalize_text",
    "prepare_sentence",
    "prepare_text",
    "split_sentences",
]


def prepare_sentence(
    sentence: str,
    tokenizer: SupportsCharacters | Iterable[str] | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    *,
    day_first: bool = False,
) -> list[str]:
    """Normalise one sentence (from the splitter) into pieces the tokenizer can encode."""
    return split_long(normalize_text(sentence, tokenizer, day_first=day_first), max_chars)


def prepare_text(
    text: str,
    tokenizer: SupportsCharacters | Iterable[str] | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    *,
    day_first: bool = False,
) -> list[str]:
    """Split a whole text into sentences, then normalise each; [] when nothing is sayable."""
    return [
        piece
        for sentence in split_sentences(text, max_chars)
        for piece in prepare_sentence(sentence, tokenizer, max_chars, day_first=day_first)
    ]
