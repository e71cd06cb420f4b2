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
   number left. All number words come from num2words (see ``numbers.py``).
5. Symbols (& + @ = % ...).
6. Characters the vocabulary lacks: accents stripped when the vocabulary has no accented
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

from . import numbers as num
from .alphabet import SupportsCharacters, as_alphabet
from .markup import strip_markdown

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
_DOMAIN_RE = re.compile(r"(?<![\w.@-])[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|dev|de|uk|eu|info|app)\b", re.IGNORECASE)


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


def _keep_final_period(match: re.Match, words: str) -> str:
    """An expanded "etc." at the very end still closes the sentence."""
    at_end = match.group().endswith(".") and not match.string[match.end() :].strip()
    return words + "." if at_end else words


def _dr_st(match: re.Match) -> str:
    before = match.string[: match.start()].rstrip()
    name_follows = match.group(2) is not None
    if match.group(1) == "Dr":
        words = "Doctor" if name_follows or not before else "Drive"
    else:  # "St. Louis" / "in St. Louis" are saints; "Main St." / "12 Main St. Apt 4" / "5th St" streets
        words = "Street" if not name_follows or _STREET_NAME_BEFORE_RE.search(before) else "Saint"
    return _keep_final_period(match, words)


def abbreviations(text: str) -> str:
    """Dr. Smith -> Doctor Smith, Main St. -> Main Street, e.g. -> for example, No. 5 -> number 5."""
    text = _NUMBER_SIGN_RE.sub("number ", text)
    text = _TITLE_RE.sub(lambda m: _keep_final_period(m, _TITLES[m.group(1)]), text)
    text = _DR_ST_RE.sub(_dr_st, text)
    text = _LATIN_RE.sub(lambda m: _keep_final_period(m, _LATIN[m.group(1).lower()]), text)
    return _LETTER_DOTS_RE.sub(lambda m: _keep_final_period(m, " ".join(m.group().replace(".", ""))), text)


# --------------------------------------------------------------------------- numbers

_NUM = r"(?:(?<![\w.-])-)?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"  # "-3.5", "42", ".5"
_MONTH_NAMES = {name.lower(): i for i, name in enumerate(num.MONTHS, 1)}
_MONTH_NAMES.update({name[:3].lower(): i for i, name in enumerate(num.MONTHS, 1)})
_MONTH_NAMES["sept"] = 9
_MONTH = rf"\b({'|'.join(sorted((m.capitalize() for m in _MONTH_NAMES), key=len, reverse=True))})\b\.?"

_THOUSANDS_RE = re.compile(r"(?<![0-9.,])[0-9]{1,3}(?:,[0-9]{3})+(?![0-9]|,[0-9])")
_ISO_DATE_RE = re.compile(r"\b([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})\b")
_NUMERIC_DATE_RE = re.compile(r"\b([0-9]{1,2})([/.-])([0-9]{1,2})\2([0-9]{4}|[0-9]{2})\b(?![./-][0-9])")
_MONTH_DAY_RE = re.compile(rf"{_MONTH}\s+([0-9]{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+([0-9]{{4}})\b)?")
_DAY_MONTH_RE = re.compile(rf"\b(?:the\s+)?([0-9]{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?:,?\s+([0-9]{{4}})\b)?")
_MONTH_YEAR_RE = re.compile(rf"{_MONTH}\s+([0-9]{{4}})\b")
_MERIDIEM = r"(?:\s*([AaPp])\.?\s?[Mm]\b\.?)"
_TIME_RE = re.compile(rf"\b([0-9]{{1,2}}):([0-9]{{2}})(?::([0-9]{{2}}))?\b{_MERIDIEM}?")
_HOUR_RE = re.compile(rf"\b([0-9]{{1,2}}){_MERIDIEM}")
_RATIO_RE = re.compile(r"\b([0-9]+):([0-9]+)\b")
_RANGE_RE = re.compile(rf"({_NUM}(?::[0-9]{{2}})?)\s*[-–]\s*(?=[$€£¥₹]?[0-9])")
_DEGREES_RE = re.compile(rf"({_NUM})\s*°\s*([CF])?(?![a-zA-Z])")
_PERCENT_RE = re.compile(rf"({_NUM})\s*%")
_ORDINAL_RE = re.compile(r"\b([0-9]+)(st|nd|rd|th)\b", re.IGNORECASE)
_DECADE_RE = re.compile(r"\b([12][0-9]{2}0)'?s\b")
_SHORT_DECADE_RE = re.compile(r"(?:(?<![\w'])'|\b)([1-9]0)'?s\b")  # '80s, 90's, in their 50s
_ERA_RE = re.compile(r"\b([0-9]{1,4})\s*(AD|BC|BCE|CE)\b")
_YEAR_CUE = (
    r"in|since|from|until|till|by|during|before|after|of|year|circa|around|early|late|mid|"
    r"spring|summer|autumn|fall|winter"
)
_YEAR_RE = re.compile(rf"\b((?:{_YEAR_CUE})\s+)([12][0-9]{{3}})\b(?!\s*[%°$€£]|[.,][0-9])", re.IGNORECASE)
_MIXED_FRACTION_RE = re.compile(r"\b([0-9]+)\s+([0-9]+)/([0-9]+)\b(?![/.][0-9])")
_FRACTION_RE = re.compile(r"\b([0-9]+)/([0-9]+)\b(?![/.][0-9])")
_DOTTED_RE = re.compile(r"\b[0-9]+(?:\.[0-9]+){2,}\b")
_TIMES_RE = re.compile(r"(?<=[0-9])\s*[x×*]\s*(?=[0-9])")
_NUMBER_RE = re.compile(_NUM)
_DIGIT_RE = re.compile(r"[0-9]")

_CURRENCIES = {  # symbol or code: (one, many, one hundredth, many hundredths)
    "$": ("dollar", "dollars", "cent", "cents"), "USD": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"), "EUR": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"), "GBP": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "", ""), "JPY": ("yen", "yen", "", ""), "CNY": ("yuan", "yuan", "", ""),
    "₹": ("rupee", "rupees", "paisa", "paise"), "INR": ("rupee", "rupees", "paisa", "paise"),
    "CHF": ("Swiss franc", "Swiss francs", "centime", "centimes"),
    "CAD": ("Canadian dollar", "Canadian dollars", "cent", "cents"),
    "AUD": ("Australian dollar", "Australian dollars", "cent", "cents"),
    "SEK": ("Swedish krona", "Swedish kronor", "", ""), "NOK": ("Norwegian krone", "Norwegian kroner", "", ""),
    "DKK": ("Danish krone", "Danish kroner", "", ""), "PLN": ("zloty", "zlotys", "", ""),
}  # fmt: skip
_SCALES = {"k": "thousand", "K": "thousand", "m": "million", "M": "million", "mn": "million",
           "bn": "billion", "b": "billion", "B": "billion", "thousand": "thousand", "million": "million",
           "billion": "billion", "trillion": "trillion"}  # fmt: skip
_SYMBOLS = "$€£¥₹"
_CODES = "|".join(code for code in _CURRENCIES if code.isalpha())
_SCALE = rf"(?:\s?({'|'.join(sorted(_SCALES, key=len, reverse=True))})\b)?"
_AMOUNT = r"([0-9]+(?:\.[0-9]+)?)"
_MONEY_BEFORE_RE = re.compile(rf"(?:(?<![\w.-])(-))?([{_SYMBOLS}]|\b(?:{_CODES})\s?)\s?{_AMOUNT}{_SCALE}")
_MONEY_AFTER_RE = re.compile(rf"(?:(?<![\w.-])(-))?\b{_AMOUNT}{_SCALE}\s?([{_SYMBOLS}]|(?:{_CODES})\b)")

_UNITS = {  # abbreviation: (one, many)
    "km/h": ("kilometer per hour", "kilometers per hour"), "kmh": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"), "mph": ("mile per hour", "miles per hour"),
    "m/s": ("meter per second", "meters per second"), "km": ("kilometer", "kilometers"),
    "cm": ("centimeter", "centimeters"), "mm": ("millimeter", "millimeters"), "m": ("meter", "meters"),
    "m2": ("square meter", "square meters"), "m3": ("cubic meter", "cubic meters"),
    "km2": ("square kilometer", "square kilometers"), "mi": ("mile", "miles"), "ft": ("foot", "feet"),
    "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"), "mg": ("milligram", "milligrams"),
    "μg": ("microgram", "micrograms"), "μg/m3": ("microgram per cubic meter", "micrograms per cubic meter"),
    "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"), "oz": ("ounce", "ounces"),
    "L": ("liter", "liters"), "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"),
    "W": ("watt", "watts"), "kW": ("kilowatt", "kilowatts"), "MW": ("megawatt", "megawatts"),
    "Wh": ("watt hour", "watt hours"), "kWh": ("kilowatt hour", "kilowatt hours"),
    "MWh": ("megawatt hour", "megawatt hours"), "V": ("volt", "volts"), "mA": ("milliamp", "milliamps"),
    "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"), "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"), "KB": ("kilobyte", "kilobytes"), "kB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"), "GB": ("gigabyte", "gigabytes"), "TB": ("terabyte", "terabytes"),
    "hPa": ("hectopascal", "hectopascals"), "mbar": ("millibar", "millibars"),
    "ppm": ("part per million", "parts per million"),
    "lx": ("lux", "lux"), "dB": ("decibel", "decibels"), "ms": ("millisecond", "milliseconds"),
    "sec": ("second", "seconds"), "min": ("minute", "minutes"), "h": ("hour", "hours"),
    "hr": ("hour", "hours"), "hrs": ("hour", "hours"),
}  # fmt: skip
_UNIT_RE = re.compile(rf"({_NUM})\s?({'|'.join(map(re.escape, sorted(_UNITS, key=len, reverse=True)))})(?![\w/])")


def _is_one(token: str) -> bool:
    return token.lstrip("-") in ("1", "1.0")


def _pad(match: re.Match, words: str) -> str:
    """Surround words with spaces where they touch a letter or digit ("mp3" -> "mp three")."""
    text = match.string
    before = match.start() > 0 and text[match.start() - 1].isalnum()
    after = match.end() < len(text) and text[match.end()].isalnum()
    return f"{' ' if before else ''}{words}{' ' if after else ''}"


def _iso_date(match: re.Match) -> str:
    year, month, day = (int(g) for g in match.groups())
    return num.date_words(year, month, day) if num.is_valid_date(month, day) else match.group()


def _numeric_date(match: re.Match, day_first: bool) -> str:
    first, separator, second, year_text = match.groups()
    if separator == "." and len(year_text) == 2:
        return match.group()  # "1.2.10" is a version number, not a date
    a, b = int(first), int(second)
    year = int(year_text) if len(year_text) == 4 else (2000 if int(year_text) < 70 else 1900) + int(year_text)
    orders = [(b, a), (a, b)] if day_first or separator == "." else [(a, b), (b, a)]
    for month, day in orders:  # the preferred order first, the other when it is no date
        if num.is_valid_date(month, day):
            return num.date_words(year, month, day)
    return match.group()


def _month_day(match: re.Match) -> str:
    month, day, year = _MONTH_NAMES[match.group(1).lower()], int(match.group(2)), match.group(3)
    if not num.is_valid_date(month, day):
        return match.group()
    return _keep_final_period(match, num.date_words(int(year) if year else None, month, day))


def _day_month(match: re.Match) -> str:
    day, month, year = int(match.group(1)), _MONTH_NAMES[match.group(2).lower()], match.group(3)
    if not num.is_valid_date(month, day):
        return match.group()
    words = f"the {num.ordinal(day)} of {num.MONTHS[month - 1]}"
    return _keep_final_period(match, f"{words}, {num.year_words(int(year))}" if year else words)


def _month_year(match: re.Match) -> str:
    return f"{num.MONTHS[_MONTH_NAMES[match.group(1).lower()] - 1]} {num.year_words(int(match.group(2)))}"


def _time(match: re.Match) -> str:
    hour, minute = int(match.group(1)), int(match.group(2))
    second = int(match.group(3)) if match.group(3) else None
    meridiem = f"{match.group(4)}m" if match.group(4) else None
    if hour > (12 if meridiem else 24) or minute > 59 or (second or 0) > 59:
        return match.group()
    return _keep_final_period(match, num.time_words(hour, minute, second, meridiem))


def _hour(match: re.Match) -> str:
    hour = int(match.group(1))
    if not 0 < hour <= 12:
        return match.group()
    return _keep_final_period(match, num.time_words(hour, 0, None, f"{match.group(2)}m"))


def _money(sign: str | None, symbol: str, amount: str, scale: str | None) -> str:
    one, many, cent, cents = _CURRENCIES[symbol.strip()]
    whole, _, frac = amount.partition(".")
    minus = "minus " if sign else ""
    if scale:
        return f"{minus}{num.number_words(amount)} {_SCALES[scale]} {many}"
    if frac and (len(frac) > 2 or not cent):
        return f"{minus}{num.number_words(amount)} {many}"
    units = f"{num.integer_words(whole)} {one if whole == '1' else many}"
    hundredths = int(frac.ljust(2, "0")) if frac else 0
    if not hundredths:
        return minus + units
    small = f"{num.cardinal(hundredths)} {cent if hundredths == 1 else cents}"
    return minus + (small if int(whole) == 0 else f"{units} and {small}")


def _number_unit(match: re.Match, table: dict[str, tuple[str, str]]) -> str:
    value, unit = match.group(1), match.group(2)
    one, many = table[unit]
    return _pad(match, f"{num.number_words(value)} {one if _is_one(value) else many}")


def _degrees(match: re.Match) -> str:
    value, scale = match.group(1), match.group(2)
    words = f"{num.number_words(value)} {'degree' if _is_one(value) else 'degrees'}"
    return _pad(match, words + {"C": " Celsius", "F": " Fahrenheit", None: ""}[scale])


def _year(match: re.Match) -> str:
    return match.group(1) + num.year_words(int(match.group(2)))


def _era(match: re.Match) -> str:
    return f"{num.year_words(int(match.group(1)))} {' '.join(match.group(2))}"


def _fraction(match: re.Match) -> str:
    numerator, denominator = int(match.group(1)), int(match.group(2))
    if denominator == 0 or max(len(match.group(1)), len(match.group(2))) > num.MAX_CARDINAL_DIGITS:
        return f"{num.integer_words(match.group(1))} slash {num.integer_words(match.group(2))}"
    return num.fraction_words(numerator, denominator)


def _mixed_fraction(match: re.Match) -> str:
    whole, numerator, denominator = match.groups()
    if not 0 < int(numerator) < int(denominator) <= 10:
        return match.group()
    return f"{num.integer_words(whole)} and {num.fraction_words(int(numerator), int(denominator))}"


def numbers(text: str, day_first: bool = False) -> str:
    """Every digit becomes words, reading it in context (see the module docstring)."""
    if not _DIGIT_RE.search(text):  # every rule below needs a digit (most sentences have none)
        return text
    text = _THOUSANDS_RE.sub(lambda m: m.group().replace(",", ""), text)
    text = _ISO_DATE_RE.sub(_iso_date, text)
    text = _NUMERIC_DATE_RE.sub(lambda m: _numeric_date(m, day_first), text)
    text = _MONTH_DAY_RE.sub(_month_day, text)
    text = _DAY_MONTH_RE.sub(_day_month, text)
    text = _MONTH_YEAR_RE.sub(_month_year, text)
    text = _RANGE_RE.sub(r"\1 to ", text)
    text = _TIME_RE.sub(_time, text)
    text = _HOUR_RE.sub(_hour, text)
    text = _RATIO_RE.sub(r"\1 to \2", text)
    text = _MONEY_BEFORE_RE.sub(lambda m: _pad(m, _money(m.group(1), m.group(2), m.group(3), m.group(4))), text)
    text = _MONEY_AFTER_RE.sub(lambda m: _pad(m, _money(m.group(1), m.group(4), m.group(2), m.group(3))), text)
    text = _DEGREES_RE.sub(_degrees, text)
    text = _UNIT_RE.sub(lambda m: _number_unit(m, _UNITS), text)
    text = _PERCENT_RE.sub(lambda m: _pad(m, f"{num.number_words(m.group(1))} percent"), text)
    text = _ORDINAL_RE.sub(lambda m: _pad(m, num.ordinal(int(m.group(1)))) if len(m.group(1)) <= 9 else m.group(), text)
    text = _DECADE_RE.sub(lambda m: num.plural_noun(num.year_words(int(m.group(1)))), text)
    text = _SHORT_DECADE_RE.sub(lambda m: num.plural_noun(num.cardinal(int(m.group(1)))), text)
    text = _ERA_RE.sub(_era, text)
    text = _YEAR_RE.sub(_year, text)
    text = _MIXED_FRACTION_RE.sub(_mixed_fraction, text)
    text = _FRACTION_RE.sub(_fraction, text)
    text = _DOTTED_RE.sub(lambda m: " dot ".join(num.integer_words(p) for p in m.group().split(".")), text)
    text = _TIMES_RE.sub(" times ", text)
    return _NUMBER_RE.sub(lambda m: _pad(m, num.number_words(m.group())), text)


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


# --------------------------------------------------------------------------- characters

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
