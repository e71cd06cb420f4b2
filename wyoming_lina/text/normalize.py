"""Text normalisation: make any text sayable by Lina's 256-token character vocabulary.

The vocabulary holds lower-case letters, a little punctuation and a few accented letters,
and no digits or symbols: "It's 20°C & 50% humid" cannot even be encoded. Home Assistant
sends exactly such text (sensor values, times, money, LLM markdown), so it is rewritten
into words here. The rules run in a fixed order, each a small function:

1. Unicode: NFKC, typographic quotes/dashes/ellipsis to their plain forms, invisible
   characters removed, vulgar fractions and superscript powers spelled out.
2. Markdown markers, URLs and e-mail addresses.
3. Abbreviations (Dr., St., e.g., vs., No. 5 ...), which need the raw punctuation.
4. Numbers in context, most specific first: dates, times, money, ranges, temperatures,
   units, percentages, ordinals, decades and years, fractions, dotted versions, then any
   number left (``number_readings.py``). All number words come from num2words (``numbers.py``).
5. Symbols (& + @ = % ...).
6. Characters the vocabulary lacks (``characters.py``): accents stripped when the vocabulary has no accented
   form, a few letters transliterated (ß -> ss), everything else (emoji, other scripts)
   dropped with a DEBUG log on ``wyoming_lina.text``.
7. Whitespace and punctuation tidied; text without any letter becomes "".

Decisions worth knowing: "1/5/2024" is month/day/year unless the first number is over 12
or ``day_first=True`` ("1.5.2024" with dots is always day.month.year); a bare four-digit
number is read as a year only with a cue ("in 1999", "1999 AD", a month name, "1990s");
"1/2" is a fraction, not a date; times are read as written ("15:45" -> "fifteen
forty-five", "3pm" -> "three p m"); money with cents reads "five dollars and fifty cents".

:func:`normalize_text` never raises: a bug in a rule is logged and the text falls back to
its supported characters, so a synthesis request is never lost to normalisation.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable

from .alphabet import SupportsCharacters, as_alphabet
from .characters import supported_characters
from .markup import strip_markdown
from .number_readings import keep_final_period, numbers

_LOGGER = logging.getLogger("wyoming_lina.text")

Rule = Callable[[str], str]

# --------------------------------------------------------------------------- unicode

_PRE_NFKC = {
    "™": " ", "®": " ", "℠": " ", "©": " copyright ", "±": " plus or minus ", "˚": "°",
    "½": " 1/2", "⅓": " 1/3", "⅔": " 2/3", "¼": " 1/4", "¾": " 3/4", "⅕": " 1/5",
    "⅛": " 1/8", "⅜": " 3/8", "⅝": " 5/8", "⅞": " 7/8",
}  # fmt: skip
_PRE_NFKC_RE = re.compile("|".join(map(re.escape, _PRE_NFKC)))
_POWER_RE = re.compile(r"(?<=[0-9])([²³])")
_ORDINAL_INDICATOR_RE = re.compile(r"(?<=[0-9])\s?º(?=\s?[CF]\b)")  # "20ºC": º used as a degree sign
_PUNCTUATION = str.maketrans(
    {
        "“": '"', "”": '"', "„": '"', "‟": '"', "«": '"', "»": '"', "〝": '"', "〞": '"', "″": '"',
        "‘": "'", "’": "'", "‚": "'", "‛": "'", "‹": "'", "›": "'", "′": "'", "´": "'",
        "‐": "-", "‑": "-", "−": "-", "﹣": "-", "－": "-",
        "‒": "–", "―": "—", "⸺": "—", "⸻": "—", "⁄": "/", "∕": "/",
        "\t": " ", "\r": "\n", "\v": "\n", "\f": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n",
        "\u00ad": None, "\u200b": None, "\u200c": None, "\u200d": None, "\u2060": None, "\ufeff": None,
    }
)  # fmt: skip


def unicode_forms(text: str) -> str:
    """NFKC plus plain punctuation; "3½" -> "3 1/2", "5²" -> "5 squared"."""
    text = _PRE_NFKC_RE.sub(lambda m: _PRE_NFKC[m.group()], text)
    text = _ORDINAL_INDICATOR_RE.sub("°", text)
    text = _POWER_RE.sub(lambda m: " squared" if m.group() == "²" else " cubed", text)
    return unicodedata.normalize("NFKC", text).translate(_PUNCTUATION)


# --------------------------------------------------------------------------- markup

_URL_RE = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)]", re.IGNORECASE)
# (?<!...) makes each pattern start only at a token start, keeping long junk linear.
_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_DOMAIN_RE = re.compile(
    r"(?<![\w.@-])[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|dev|de|uk|eu|info|app)\b", re.IGNORECASE
)


def _speak_dots(address: str) -> str:
    return " dot ".join(part for part in address.split(".") if part)


def _url(match: re.Match) -> str:
    host = re.sub(r"^(?:https?://)?(?:www\.)?", "", match.group(), flags=re.IGNORECASE)
    host = re.split(r"[/?#:]", host, maxsplit=1)[0].rstrip(".,;:!?)")
    return _speak_dots(host)


def _email(match: re.Match) -> str:
    user, _, domain = match.group().partition("@")
    return f"{_speak_dots(user)} at {_speak_dots(domain)}"


def markup(text: str) -> str:
    """Markdown markers removed; a line followed by another ends with punctuation."""
    text = strip_markdown(text)
    text = _URL_RE.sub(_url, text)
    text = _EMAIL_RE.sub(_email, text)
    text = _DOMAIN_RE.sub(lambda m: _speak_dots(m.group()), text)
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    return " ".join([_close_line(line) for line in lines[:-1]] + lines[-1:])


def _close_line(line: str) -> str:
    """A line break is a sentence break: make it one for the model too."""
    return line if line.rstrip("\"')]}*_")[-1:] in tuple(".!?:;,—") else line + "."


# --------------------------------------------------------------------------- abbreviations

_TITLES = {
    "Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Prof": "Professor", "Jr": "Junior",
    "Sr": "Senior", "Mt": "Mount", "Capt": "Captain", "Sgt": "Sergeant", "Lt": "Lieutenant",
    "Col": "Colonel", "Rev": "Reverend", "Gov": "Governor", "Sen": "Senator",
    "Ave": "Avenue", "Blvd": "Boulevard", "Rd": "Road",
}  # fmt: skip
_LATIN = {
    "e.g.": "for example", "i.e.": "that is", "etc.": "et cetera", "vs.": "versus", "vs": "versus",
    "approx.": "approximately", "cf.": "compare", "incl.": "including", "ca.": "circa",
    "w/": "with ", "w/o": "without ",
}  # fmt: skip
_TITLE_RE = re.compile(rf"\b({'|'.join(_TITLES)})\.")
_DR_ST_RE = re.compile(r"\b(Dr|St)\.?(?=(\s+[A-Z])?)(?![\w])")
_LATIN_RE = re.compile(
    r"(?<![\w.])(e\.g\.|i\.e\.|etc\.|vs\.?|approx\.|cf\.|incl\.|ca\.(?=\s*[0-9])|w/o|w/)(?![\w])", re.IGNORECASE
)
_STREET_NAME_BEFORE_RE = re.compile(r"(?:\b[0-9]+(?:st|nd|rd|th)?|(?<=[a-z0-9,] )[A-Z][a-z]+)$")
_NUMBER_SIGN_RE = re.compile(r"(?:\b(?:No|no|Nr|nr|Nos|nos)\.|#)\s*(?=[0-9])")
_LETTER_DOTS_RE = re.compile(r"\b(?:[A-Za-z]\.){2,}(?![\w])")


def _dr_st(match: re.Match) -> str:
    before = match.string[: match.start()].rstrip()
    name_follows = match.group(2) is not None
    if match.group(1) == "Dr":
        words = "Doctor" if name_follows or not before else "Drive"
    else:  # "St. Louis" / "in St. Louis" are saints; "Main St." / "12 Main St. Apt 4" / "5th St" streets
        words = "Street" if not name_follows or _STREET_NAME_BEFORE_RE.search(before) else "Saint"
    return keep_final_period(match, words)


def abbreviations(text: str) -> str:
    """Dr. Smith -> Doctor Smith, Main St. -> Main Street, e.g. -> for example, No. 5 -> number 5."""
    text = _NUMBER_SIGN_RE.sub("number ", text)
    text = _TITLE_RE.sub(lambda m: keep_final_period(m, _TITLES[m.group(1)]), text)
    text = _DR_ST_RE.sub(_dr_st, text)
    text = _LATIN_RE.sub(lambda m: keep_final_period(m, _LATIN[m.group(1).lower()]), text)
    return _LETTER_DOTS_RE.sub(lambda m: keep_final_period(m, " ".join(m.group().replace(".", ""))), text)


# --------------------------------------------------------------------------- symbols

_SYMBOL_WORDS = {
    "&": " and ", "+": " plus ", "@": " at ", "=": " equals ", "%": " percent ", "°": " degrees ",
    "×": " times ", "÷": " divided by ", "<": " less than ", ">": " greater than ", "~": " about ",
    "§": " section ", "$": " dollars ", "€": " euros ", "£": " pounds ", "¥": " yen ", "₹": " rupees ",
    "|": ", ", "\\": " ", "/": " slash ", "_": " ", "*": " ", "^": " ", "#": " ", "[": "(", "]": ")",
    "{": "(", "}": ")", "¯": "",
}  # fmt: skip
_AND_OR_RE = re.compile(r"\band/or\b", re.IGNORECASE)
_SPACED_DASH_RE = re.compile(r"(?:\s+[-–—]+)+\s+|\s*[–—]+(?:\s*[-–—]+)*\s*")


def symbols(text: str, alphabet: SupportsCharacters) -> str:
    """& -> and, + -> plus, % -> percent, ...; spaced dashes become a pause."""
    text = _AND_OR_RE.sub("and or", text)
    dash = " — " if alphabet.is_supported("—") else ", "
    text = _SPACED_DASH_RE.sub(dash, text)
    return "".join(_SYMBOL_WORDS.get(ch, ch) for ch in text)


# --------------------------------------------------------------------------- tidy up

_TIDY = (
    (re.compile(r"\s+"), " "),
    (re.compile(r"\(\s*[,.;:]*\s*\)"), " "),  # "()" left after removals
    (re.compile(r"(?<=\()\s+|\s+(?=\))"), ""),
    (re.compile(r"\s+(?=[,.;:!?…])"), ""),
    (re.compile(r"—(?:\s*—)+"), "—"),  # pauses left side by side once what stood between was dropped
    (re.compile(r"([,;:])(?:\s*[,;:—])+"), r"\1"),
    (re.compile(r"[,;:—]+\s*(?=[.!?])"), ""),
    (re.compile(r"([!?])[!?]+"), r"\1"),
    (re.compile(r"\.{4,}"), "..."),
    (re.compile(r"(?<![.])\.\.(?![.])"), "."),
    (re.compile(r"^[\s,.;:!?)—-]+"), ""),
    (re.compile(r"\s+"), " "),
)
_LETTER_RE = re.compile(r"[^\W\d_]")


def tidy(text: str) -> str:
    """Collapse whitespace and stray punctuation; nothing speakable left gives ""."""
    for pattern, replacement in _TIDY:
        text = pattern.sub(replacement, text)
    text = text.strip()
    return text if _LETTER_RE.search(text) else ""


# --------------------------------------------------------------------------- entry point


def normalize_text(
    text: str,
    tokenizer_alphabet: SupportsCharacters | Iterable[str] | None = None,
    *,
    day_first: bool = False,
) -> str:
    """Rewrite ``text`` so that every character is in the tokenizer's vocabulary.

    ``tokenizer_alphabet`` is a :class:`LinaTokenizer` (or anything with ``is_supported``),
    a set of characters, or None for upstream Lina's bpe256 alphabet. Never raises.
    """
    alphabet = as_alphabet(tokenizer_alphabet)
    try:
        return _normalize(str(text), alphabet, day_first)
    except Exception:  # a rule bug must not lose the request: keep what can be said
        _LOGGER.warning("Text normalisation failed; keeping only supported characters", exc_info=True)
        try:
            return tidy(supported_characters(str(text), alphabet))
        except Exception:
            return ""


def _normalize(text: str, alphabet: SupportsCharacters, day_first: bool) -> str:
    text = unicode_forms(text)
    text = markup(text)
    text = abbreviations(text)
    text = numbers(text, day_first)
    text = symbols(text, alphabet)
    text = supported_characters(text, alphabet)
    return tidy(supported_characters(tidy(text), alphabet))
