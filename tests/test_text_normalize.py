"""normalize_text: a table of readings, vocabulary safety, and property tests."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wyoming_lina.text import normalize as normalize_module
from wyoming_lina.text import normalize_text

CASES = [
    # numbers
    ("I have 42 apples.", "I have forty-two apples."),
    ("1,234 people", "one thousand two hundred and thirty-four people"),
    ("1,234,567", "one million two hundred and thirty-four thousand five hundred and sixty-seven"),
    ("It is -5 outside.", "It is minus five outside."),
    ("0", "zero"),
    ("Call 007.", "Call zero zero seven."),
    ("12345678901234567890", "one two three four five six seven eight nine zero " * 2),
    ("mp3 and A4", "mp three and A four"),
    ("COVID-19", "COVID-nineteen"),
    ("4x4", "four times four"),
    # ordinals
    ("1st 2nd 3rd 4th 23rd 101st", "first second third fourth twenty-third one hundred and first"),
    # years and decades
    ("in 1999", "in nineteen ninety-nine"),
    ("Since 2024 and until 2005.", "Since twenty twenty-four and until two thousand and five."),
    ("The 1990s and the '80s.", "The nineteen nineties and the eighties."),
    ("500 BC", "five hundred B C"),
    ("the 90's, in their 50s", "the nineties, in their fifties"),
    ("2024 people", "two thousand and twenty-four people"),
    # decimals and versions
    ("3.14", "three point one four"),
    ("0.5 and .25", "zero point five and point two five"),
    ("Version 1.2.3", "Version one dot two dot three"),
    # money
    ("$5", "five dollars"),
    ("$1", "one dollar"),
    ("$5.50", "five dollars and fifty cents"),
    ("$0.99", "ninety-nine cents"),
    ("$1.01", "one dollar and one cent"),
    ("€3", "three euros"),
    ("£2.50", "two pounds and fifty pence"),
    ("¥500", "five hundred yen"),
    ("5 USD", "five dollars"),
    ("EUR 20", "twenty euros"),
    ("10€", "ten euros"),
    ("$1.5 million", "one point five million dollars"),
    ("$5k", "five thousand dollars"),
    ("-$3", "minus three dollars"),
    # percent
    ("50%", "fifty percent"),
    ("3.5 %", "three point five percent"),
    ("5-10% off", "five to ten percent off"),
    # times
    ("3:30 pm", "three thirty p m"),
    ("15:45", "fifteen forty-five"),
    ("9:05 AM", "nine oh five a m"),
    ("at 9:00.", "at nine o'clock."),
    ("at 18:00", "at eighteen hundred"),
    ("at 00:00", "at midnight"),
    ("3pm", "three p m"),
    ("at 7 a.m. tomorrow", "at seven a m tomorrow"),
    ("See you at 7 p.m.", "See you at seven p m."),
    ("10:30:15", "ten thirty and fifteen seconds"),
    ("9:00-17:00", "nine o'clock to seventeen hundred"),
    ("The score was 2:1.", "The score was two to one."),
    # dates
    ("2024-05-01", "May first, twenty twenty-four"),
    ("1/5/2024", "January fifth, twenty twenty-four"),
    ("13/5/2024", "May thirteenth, twenty twenty-four"),
    ("1.5.2024", "May first, twenty twenty-four"),
    ("12/25/99", "December twenty-fifth, nineteen ninety-nine"),
    ("March 3, 2021", "March third, twenty twenty-one"),
    ("on May 5th.", "on May fifth."),
    ("the 5th of May", "the fifth of May"),
    ("in June 2020", "in June twenty twenty"),
    # temperatures and units
    ("20°C", "twenty degrees Celsius"),
    ("20ºC", "twenty degrees Celsius"),
    ("5 ± 0.5 mm", "five plus or minus zero point five millimeters"),
    ("-5 °C", "minus five degrees Celsius"),
    ("68°F", "sixty-eight degrees Fahrenheit"),
    ("1°", "one degree"),
    ("It is 21.5℃.", "It is twenty-one point five degrees Celsius."),
    ("5 km", "five kilometers"),
    ("1 km", "one kilometer"),
    ("50 km/h", "fifty kilometers per hour"),
    ("3.5kWh", "three point five kilowatt hours"),
    ("100 W", "one hundred watts"),
    ("1013 hPa", "one thousand and thirteen hectopascals"),
    ("12 µg/m³", "twelve micrograms per cubic meter"),
    ("10 m²", "ten square meters"),
    ("5²", "five squared"),
    ("6 ft", "six feet"),
    # ranges and fractions
    ("5-10", "five to ten"),
    ("pages 5 – 10", "pages five to ten"),
    ("1/2 cup", "one half cup"),
    ("3 1/2 cups", "three and one half cups"),
    ("3½ miles", "three and one half miles"),
    ("3/4", "three quarters"),
    ("24/7", "twenty-four seven"),
    ("10/100", "ten out of one hundred"),
    # symbols
    ("Tom & Jerry", "Tom and Jerry"),
    ("2 + 2 = 4", "two plus two equals four"),
    ("me@example.com", "me at example dot com"),
    ("see https://www.home-assistant.io/docs.", "see home-assistant dot io."),
    ("and/or", "and or"),
    ("input/output", "input slash output"),
    ("#1 hit", "number one hit"),
    ("No. 5", "number five"),
    ("~5 min", "about five minutes"),
    ("AT&T", "AT and T"),
    ("a_b", "a b"),
    ("© 2024", "copyright two thousand and twenty-four"),
    # abbreviations
    ("Dr. Smith", "Doctor Smith"),
    ("He lives on Elm Dr.", "He lives on Elm Drive."),
    ("Mr. and Mrs. Jones", "Mister and Missus Jones"),
    ("Ms. Lee", "Miz Lee"),
    ("St. Louis", "Saint Louis"),
    ("Main St. is closed", "Main Street is closed"),
    ("on 5th St.", "on fifth Street."),
    ("I live at 12 Main St. Apt 4 in St. Paul", "I live at twelve Main Street Apt four in Saint Paul"),
    ("e.g. apples", "for example apples"),
    ("i.e. pears", "that is pears"),
    ("apples, pears, etc.", "apples, pears, et cetera."),
    ("Lakers vs. Celtics", "Lakers versus Celtics"),
    ("approx. 5", "approximately five"),
    ("Prof. Brown", "Professor Brown"),
    ("the U.S.A.", "the U S A."),
    # unicode
    ("“Smart” ‘quotes’", "\"Smart\" 'quotes'"),
    ("It’s", "It's"),
    ("wait… what", "wait... what"),
    ("this — that", "this — that"),
    ("this – that", "this — that"),
    ("this - that", "this — that"),
    ("well-known", "well-known"),
    ("café crème naïve", "café crème naive"),
    ("Straße in Århus, Łódź", "Strasse in Arhus, Lodz"),
    ("ｆｕｌｌｗｉｄｔｈ １２", "fullwidth twelve"),
    ("non\u00a0breaking\u200bspace", "non breakingspace"),
    # dropped characters
    ("Hello 😀 world 👍🏽!", "Hello world!"),
    ("Good morning ☀️", "Good morning"),
    ("Привет", ""),
    ("Hi 你好。", "Hi"),
    # empty and punctuation only
    ("", ""),
    ("   ", ""),
    ("...", ""),
    ("?!", ""),
    ("- * #", ""),
    ("😀", ""),
    # markdown
    ("- apples\n- pears", "apples. pears"),
    ("* one\n* two", "one. two"),
    ("1. Open the door.\n2) Close it", "Open the door. Close it"),
    ("# Weather\nIt is sunny.", "Weather. It is sunny."),
    ("**Kitchen**: on, *bedroom*: off, __hall__: _dim_", "Kitchen: on, bedroom: off, hall: dim"),
    ("Use `ha core restart` now", "Use ha core restart now"),
    ("[the docs](http://example.com)", "the docs"),
    ("Line one\n\n---\nLine two", "Line one. Line two"),
    ("<b>bold</b> text", "bold text"),
    ("The lights are on:\n- Kitchen\n- Hall", "The lights are on: Kitchen. Hall"),
    # whitespace
    ("  lots \t of \n\n space  ", "lots of. space"),
    ("Hello , world !", "Hello, world!"),
    ("Really?!!", "Really?"),
    ("Empty () parens", "Empty parens"),
    ("[BOS] and {braces}", "(BOS) and (braces)"),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:30] for c in CASES])
def test_normalization_table(text, expected, tokenizer):
    result = normalize_text(text, tokenizer)
    assert result == expected.strip()
    tokenizer.encode(result)  # every output is encodable


@pytest.mark.parametrize(("text", "expected"), CASES[:40], ids=[c[0][:30] for c in CASES[:40]])
def test_default_alphabet_gives_the_same_result(text, expected):
    assert normalize_text(text) == expected.strip()


def test_day_first_option():
    assert normalize_text("1/5/2024", day_first=True) == "May first, twenty twenty-four"
    assert normalize_text("5/13/2024", day_first=True) == "May thirteenth, twenty twenty-four"  # 13 is no month


def test_accents_follow_the_alphabet():
    plain = set(" abcdefghijklmnopqrstuvwxyz.,'-")
    assert normalize_text("Café Ærø — naïve", plain) == "Cafe Aero, naive"
    assert normalize_text("Café Ærø — naïve") == "Café Æro — naive"


def test_dropped_characters_are_logged_at_debug(caplog):
    with caplog.at_level(logging.DEBUG, logger="wyoming_lina.text"):
        assert normalize_text("Party 🎉 time") == "Party time"
    assert any("U+1F389" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


def test_a_failing_rule_falls_back_to_supported_characters(monkeypatch, caplog):
    def broken(text, day_first=False):
        raise RuntimeError("rule bug")

    monkeypatch.setattr(normalize_module, "numbers", broken)
    with caplog.at_level(logging.WARNING, logger="wyoming_lina.text"):
        assert normalize_text("Hi 5 😀 there") == "Hi there"
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_non_string_input_is_converted():
    assert normalize_text(5) == "five"  # type: ignore[arg-type]


# Any text, weighted towards the characters and tokens the rules look at.
_TEXT = st.lists(
    st.one_of(
        st.characters(),
        st.sampled_from(list("0123456789.,:;-–—/%$€£°#*_&+@=()[]{}\"'“”‘’… \n\t")),
        st.sampled_from(["Dr.", "St.", "e.g.", "vs.", "No.", "pm", "a.m.", "km", "°C", "- ", "1. ", "**"]),
        st.sampled_from(["\n# ", "\n", "<b>", "[x](y)", "http://a.io/b", "x@y.com", "`"]),
        st.sampled_from(["May", "Hello", "the", "in ", "1999", "2024-05-01", "3:30", "$5.50", "½", "²", "😀", "é"]),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_TEXT)
@example(text="\ud800")
@example(text="9" * 400)
@example(text="1" + "0" * 30 + "th")
@example(text="$" + "9" * 40 + ".99 million")
@example(text="99:99 pm 0/0 1/0 0th 00:00 31/02/2024 9999-99-99")
def test_normalize_never_raises_and_is_always_encodable(text, tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="wyoming_lina.text"):
        result = normalize_text(text, tokenizer)
    assert not caplog.records, "a rule raised and the fallback was used"
    assert tokenizer.unsupported_characters(result) == set()
    assert result == result.strip() and "  " not in result
    tokenizer.encode(result)
    caplog.clear()


# Space-separated words, numbers and abbreviations: text a person or an LLM would write.
_WORDY = st.lists(
    st.one_of(
        st.from_regex(r"[A-Za-z]{1,8}[.,!?]?", fullmatch=True),
        st.from_regex(r"-?[0-9]{1,6}(\.[0-9]{1,3})?(%|°C| km|st|th)?[.,]?", fullmatch=True),
        st.sampled_from(["Dr.", "St.", "e.g.", "vs.", "No. 5", "3 pm", "a.m.", "$5.50", "1/2", "1990s", "in 1999"]),
        st.sampled_from(["2024-05-01", "15:45", "&", "+", "—", "“quoted”", "café", "😀", "- ", "**bold**"]),
    ),
    max_size=25,
).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(text=_WORDY)
@example(text="A — 😀 — Dr.")  # the emoji dropped left two pauses side by side
def test_normalize_is_idempotent_on_its_own_output(text):
    once = normalize_text(text)
    assert normalize_text(once) == once
