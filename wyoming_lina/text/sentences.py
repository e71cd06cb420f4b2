"""Sentence splitting for whole texts and for text streamed in fragments.

Each sentence is synthesised on its own as soon as it is complete, which is what keeps the
first audio early. Boundaries come from ``sentence-stream`` (wyoming-piper's library: it
keeps "Dr. Smith", "3.5" and initials together and takes text in any fragments). Around it:

* Line structure. Every line break ends a sentence, and list markers / heading marks at
  line starts are removed before the detector sees them, so "1." at a line start is not
  mistaken for a sentence of its own. Streamed fragments are not line-aligned, so a line
  start is held back until it is clear whether it begins with a marker.
* sentence-stream treats every capitalised word of up to three letters before a full stop
  as an abbreviation, so "It is 20°C. Wear a coat." or "I saw Tom. He waved." would stay
  one sentence. Its sentences are cut again at such points unless the word is a known
  abbreviation (Dr., Mrs., St., Jan., ...) or a single initial ("J. R. R. Tolkien").
* A few abbreviations sentence-stream does not know ("vs.", "Prof.", "e.g.") and inline
  list numbers ("... done. 2. Then ...") are joined to the following sentence.
* Length. A piece longer than ``max_chars`` is cut at the last clause boundary that fits
  (; : ! ? then , then a space), never inside a word (a single word longer than
  ``max_chars`` is the only thing ever cut). While streaming, an unfinished sentence that
  is already well past ``max_chars`` gives out its first pieces early; the cut only depends
  on text already received, so the pieces are the same as for the whole text.

Whole texts go through the same machinery, so ``split_sentences(text)`` always equals
feeding ``text`` to a :class:`SentenceChunker` in any fragments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sentence_stream import SentenceBoundaryDetector

from ..defaults import MAX_SENTENCE_CHARS
from .markup import LINE_MARKER_RE, PARTIAL_LINE_MARKER_RE

DEFAULT_MAX_CHARS = MAX_SENTENCE_CHARS
# Streaming flushes an unfinished sentence once it is this much longer than max_chars: the
# detector's look-ahead ("." then spaces then a capital) is short, so by then no sentence
# boundary can still appear inside the first piece.
_FLUSH_MARGIN = 32

_LINE_BREAKS = str.maketrans({"\r": "\n", "\v": "\n", "\f": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n"})
_SPEAKABLE_RE = re.compile(r"[^\W_]")  # a letter or digit: anything less is not a sentence
_JOIN_NEXT_RE = re.compile(
    r"(?:^|[\s(\"'])(?:vs|Prof|Gen|Capt|Sgt|Lt|Col|Rev|Hon|Gov|Sen|Rep|Pres|Supt|Fig|Figs|Vol|"
    r"approx|Approx|ca|cf|Cf|incl|Incl|Nr|Nos|e\.g|E\.g|i\.e|I\.e)\.$"
    r"|^[0-9]{1,3}[.)]$"
)
# Capitalised words sentence-stream would join (ABBREVIATION_RE) that are real abbreviations.
_ABBREVIATIONS = frozenset(
    "Dr Mr Mrs Ms Mme St Ste Jr Sr Mt Ft Pt No Nr Nos Co Inc Ltd Bros Gen Col Lt Sgt Cpl Pvt Maj Adm "
    "Rep Sen Gov Rev Hon Fig Vol Ch Op Pp Ave Rd Jan Feb Mar Apr Jun Jul Aug Sep Oct Nov Dec "
    "Mon Tue Wed Thu Fri Sat Sun Vs Al Ca Cf Ph".split()
)
_FALSE_ABBREVIATION_RE = re.compile(r"(?:(?<=°)[CF]|\b[A-Z][A-Za-z]{1,2})\.(?=\s+[A-Z])")
_STRONG_CUT_RE = re.compile(r"[;:!?…—](?=\s)")
_COMMA_CUT_RE = re.compile(r",(?=\s)")
_SPACE_RE = re.compile(r"\s")


def split_sentences(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Sentences (and over-long sentences' pieces) of a whole text, in order."""
    chunker = SentenceChunker(max_chars)
    return chunker.add(text) + chunker.finish()


def split_long(sentence: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Cut ``sentence`` into pieces of at most ``max_chars`` at clause boundaries."""
    pieces = []
    rest = sentence.strip()
    while len(rest) > max_chars:
        piece, rest = _cut_first(rest, max_chars)
        pieces.append(piece)
    pieces.append(rest)
    return [piece for piece in pieces if is_speakable(piece)]


def is_speakable(piece: str) -> bool:
    """False for empty, whitespace-only and punctuation-only pieces."""
    return _SPEAKABLE_RE.search(piece) is not None


class SentenceChunker:
    """Turns text fragments (not word-aligned: "Hel", "lo there. How ") into sentences.

    ``add`` returns the sentences completed by each fragment, ``finish`` the rest. After
    ``finish`` the chunker is empty and can take a new text.
    """

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be positive, not {max_chars}")
        self.max_chars = max_chars
        self._lines = _LineFilter()
        self._detector = SentenceBoundaryDetector()
        self._carry = ""  # a sentence ending in "vs." and the like, waiting for the next one

    def add(self, fragment: str) -> list[str]:
        """Feed one fragment; return the sentences it completed."""
        text = self._lines.feed(fragment)
        out = self._accept(self._detector.add_chunk(text))
        return out + self._flush_long()

    def finish(self) -> list[str]:
        """End of text: return everything still buffered, then reset."""
        text = self._lines.feed("", final=True)
        out = self._accept(self._detector.add_chunk(text))
        out += self._accept([self._detector.finish()])
        if self._carry:
            out += split_long(self._carry, self.max_chars)
        self._carry = ""
        self._detector = SentenceBoundaryDetector()
        return out

    def _accept(self, sentences: Iterable[str]) -> list[str]:
        out: list[str] = []
        for sentence in (part for whole in sentences for part in _resplit(whole)):
            if self._carry:
                sentence = f"{self._carry} {sentence}"
            if _JOIN_NEXT_RE.search(sentence):
                self._carry = sentence
                continue
            self._carry = ""
            out += split_long(sentence, self.max_chars)
        return out

    def _flush_long(self) -> list[str]:
        """Give out the first pieces of an unfinished sentence that is far too long already."""
        buffered = self._buffered()
        pending = f"{self._carry} {buffered}" if self._carry else buffered
        if len(pending) <= self.max_chars + _FLUSH_MARGIN or "*" in pending:
            return []
        self._carry = ""
        self._detector = SentenceBoundaryDetector()
        *complete, pending = _resplit(pending) or [""]
        out = self._accept(complete)  # "20°C. Wear": sentences the detector kept joined
        if self._carry:
            pending = f"{self._carry} {pending}"
            self._carry = ""
        while len(pending) > self.max_chars + _FLUSH_MARGIN:
            piece, pending = _cut_first(pending, self.max_chars)
            if is_speakable(piece):
                out.append(piece)
        # The rest goes back through a fresh detector (it may hold a "vs."-style carry again).
        return out + self._accept(self._detector.add_chunk(pending))

    def _buffered(self) -> str:
        """Text the detector holds (no boundary yet); empty if its internals ever change."""
        held = getattr(self._detector, "current_sentence", "")
        remaining = getattr(self._detector, "remaining_text", "")
        if not isinstance(held, str) or not isinstance(remaining, str):
            return ""
        return (held + remaining).lstrip()


def _resplit(sentence: str) -> list[str]:
    """Cut a detector sentence after "20°C." or "Tom." when a capital follows (see module doc)."""
    parts, start = [], 0
    for match in _FALSE_ABBREVIATION_RE.finditer(sentence):
        if match.group()[:-1] not in _ABBREVIATIONS:
            parts.append(sentence[start : match.end()].strip())
            start = match.end()
    parts.append(sentence[start:].lstrip())  # keep trailing space: more text may follow
    return [part for part in parts if part]


def _cut_first(text: str, max_chars: int) -> tuple[str, str]:
    """Split off the first piece (<= max_chars) of ``text``; depends on text[:max_chars + 1] only."""
    window = text[: max_chars + 1]
    minimum = max_chars // 4
    for pattern in (_STRONG_CUT_RE, _COMMA_CUT_RE):
        ends = [m.end() for m in pattern.finditer(window) if minimum <= m.end() <= max_chars]
        if ends:
            return text[: ends[-1]].strip(), text[ends[-1] :].lstrip()
    spaces = [m.start() for m in _SPACE_RE.finditer(window) if m.start() > 0]
    cut = spaces[-1] if spaces else max_chars  # no space at all: one over-long "word"
    return text[:cut].strip(), text[cut:].lstrip()


class _LineFilter:
    """Streams text, dropping line-start markers and turning each line break into a paragraph break.

    Output for any split of the input into fragments is the same as for the whole input.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._at_line_start = True

    def feed(self, text: str, final: bool = False) -> str:
        self._buffer += text.translate(_LINE_BREAKS)
        out = []
        while self._buffer:
            if self._at_line_start:
                if not final and PARTIAL_LINE_MARKER_RE.fullmatch(self._buffer):
                    break  # could still become "- " or "12. ": wait for more text
                marker = LINE_MARKER_RE.match(self._buffer)
                if marker:
                    self._buffer = self._buffer[marker.end() :]
                self._at_line_start = False
            newline = self._buffer.find("\n")
            if newline < 0:
                out.append(self._buffer)
                self._buffer = ""
                break
            out.append(self._buffer[:newline] + "\n\n")  # a blank line: sentence-stream's paragraph break
            self._buffer = self._buffer[newline + 1 :]
            self._at_line_start = True
        if final:
            out.append(self._buffer)
            self._buffer, self._at_line_start = "", True
        return "".join(out)
