"""Number words: every spelled-out number in the text package comes from here.

Lina's vocabulary has no digits, so numbers must become English words. ``num2words``
does the spelling; this module only decides which reading to ask for (cardinal, ordinal,
year, digit by digit) and tidies its output: num2words writes "one thousand, two hundred",
and a comma inside a number would make the model pause.
"""

from __future__ import annotations

from num2words import num2words

# Longer digit strings are read digit by digit (serial numbers, not quantities); this
# also keeps clear of num2words' upper limit.
MAX_CARDINAL_DIGITS = 15

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def _clean(words: str) -> str:
    return words.replace(",", "")


def cardinal(value: int) -> str:
    """1234 -> 'one thousand two hundred and thirty-four' (no commas)."""
    return _clean(num2words(value))


def ordinal(value: int) -> str:
    """23 -> 'twenty-third'."""
    return _clean(num2words(value, to="ordinal"))


def digit_words(digits: str) -> str:
    """'007' -> 'zero zero seven'."""
    return " ".join(cardinal(int(d)) for d in digits)


def integer_words(digits: str) -> str:
    """An ASCII digit string as a quantity, or digit by digit when it is not one.

    A leading zero ('007', '0815') or more than MAX_CARDINAL_DIGITS digits means a code.
    """
    if len(digits) > MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits[0] == "0"):
        return digit_words(digits)
    return cardinal(int(digits))


def number_words(token: str) -> str:
    """'-3.50' -> 'minus three point five zero'; '.5' -> 'point five'; '42' -> 'forty-two'."""
    negative = token.startswith("-")
    int_part, _, frac = token.lstrip("-").partition(".")
    words = integer_words(int_part) if int_part else ""
    if frac:
        words = f"{words} point {digit_words(frac)}".strip()
    return f"minus {words}" if negative else words


def year_words(value: int) -> str:
    """1999 -> 'nineteen ninety-nine', 2024 -> 'twenty twenty-four', 2005 -> 'two thousand and five'."""
    if 1000 <= value <= 2999:
        return _clean(num2words(value, to="year"))
    return cardinal(value)


def plural_noun(words: str) -> str:
    """'nineteen ninety' -> 'nineteen nineties' (decades, fraction denominators)."""
    if words.endswith("y"):
        return words[:-1] + "ies"
    if words.endswith("f"):
        return words[:-1] + "ves"
    return words + "s"


def fraction_words(numerator: int, denominator: int) -> str:
    """3/4 -> 'three quarters', 1/2 -> 'one half', 7/10 -> 'seven tenths', 30/40 -> 'thirty out of forty'."""
    if numerator == 24 and denominator == 7:
        return "twenty-four seven"
    if 2 <= denominator <= 10 and numerator > 0:
        name = {2: "half", 4: "quarter"}.get(denominator) or ordinal(denominator)
        return f"{cardinal(numerator)} {name if numerator == 1 else plural_noun(name)}"
    if 0 < numerator <= denominator:
        return f"{cardinal(numerator)} out of {cardinal(denominator)}"
    return f"{cardinal(numerator)} slash {cardinal(denominator)}"


def time_words(hour: int, minute: int, second: int | None = None, meridiem: str | None = None) -> str:
    """(15, 45) -> 'fifteen forty-five'; (3, 5, meridiem='pm') -> 'three oh five p m'; (9, 0) -> "nine o'clock".

    Times are read as written: 24-hour times stay 24-hour ("eighteen hundred").
    """
    if minute == 0 and meridiem:
        words = cardinal(hour)
    elif minute == 0 and hour in (0, 24):
        words = "midnight"
    elif minute == 0:
        words = f"{cardinal(hour)} hundred" if hour > 12 else f"{cardinal(hour)} o'clock"
    elif minute < 10:
        words = f"{cardinal(hour)} oh {cardinal(minute)}"
    else:
        words = f"{cardinal(hour)} {cardinal(minute)}"
    if second:
        words += f" and {cardinal(second)} {'second' if second == 1 else 'seconds'}"
    if meridiem:
        words += " " + " ".join(meridiem.lower())
    return words


def date_words(year: int | None, month: int, day: int | None) -> str:
    """(2024, 5, 1) -> 'May first, twenty twenty-four'; a missing part is left out."""
    words = MONTHS[month - 1]
    if day is not None:
        words += " " + ordinal(day)
    if year is not None:
        words += (", " if day is not None else " ") + year_words(year)
    return words


def is_valid_date(month: int, day: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= (29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31)
