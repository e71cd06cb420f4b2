"""Numbers read in context: dates, times, money, ranges, temperatures, units and the rest.

A digit means different words by what stands around it ("1/5/2024", "15:45", "$5.50", "20°C",
"3 km", "1990s"), so the most specific patterns run first and any number left is read as a
plain cardinal. The words themselves come from num2words through ``numbers.py``; this module
only recognises which reading each number needs.
"""

from __future__ import annotations

import re

from . import numbers as num


def keep_final_period(match: re.Match, words: str) -> str:
    """A reading (or an expanded "etc.") at the very end still closes the sentence."""
    at_end = match.group().endswith(".") and not match.string[match.end() :].strip()
    return words + "." if at_end else words


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
    return keep_final_period(match, num.date_words(int(year) if year else None, month, day))


def _day_month(match: re.Match) -> str:
    day, month, year = int(match.group(1)), _MONTH_NAMES[match.group(2).lower()], match.group(3)
    if not num.is_valid_date(month, day):
        return match.group()
    words = f"the {num.ordinal(day)} of {num.MONTHS[month - 1]}"
    return keep_final_period(match, f"{words}, {num.year_words(int(year))}" if year else words)


def _month_year(match: re.Match) -> str:
    return f"{num.MONTHS[_MONTH_NAMES[match.group(1).lower()] - 1]} {num.year_words(int(match.group(2)))}"


def _time(match: re.Match) -> str:
    hour, minute = int(match.group(1)), int(match.group(2))
    second = int(match.group(3)) if match.group(3) else None
    meridiem = f"{match.group(4)}m" if match.group(4) else None
    if hour > (12 if meridiem else 24) or minute > 59 or (second or 0) > 59:
        return match.group()
    return keep_final_period(match, num.time_words(hour, minute, second, meridiem))


def _hour(match: re.Match) -> str:
    hour = int(match.group(1))
    if not 0 < hour <= 12:
        return match.group()
    return keep_final_period(match, num.time_words(hour, 0, None, f"{match.group(2)}m"))


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
