"""Sentence splitting: whole texts, streamed fragments, long sentences, prepare_text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wyoming_lina.text import SentenceChunker, prepare_sentence, prepare_text, split_sentences
from wyoming_lina.text.sentences import split_long

TEXT = (
    "Hello there. How are you today? Dr. Smith measured 3.5 liters at 10 a.m. on the 3rd. "
    "J. R. R. Tolkien wrote it! Mrs. Jones agreed, e.g. Prof. Brown said so. "
    "The Lakers vs. Celtics game ended 101-99."
)
SENTENCES = [
    "Hello there.",
    "How are you today?",
    "Dr. Smith measured 3.5 liters at 10 a.m. on the 3rd.",
    "J. R. R. Tolkien wrote it!",
    "Mrs. Jones agreed, e.g. Prof. Brown said so.",
    "The Lakers vs. Celtics game ended 101-99.",
]


def feed(fragments: list[str], max_chars: int = 200) -> list[str]:
    chunker = SentenceChunker(max_chars)
    out = []
    for fragment in fragments:
        out += chunker.add(fragment)
    return out + chunker.finish()


def test_whole_text():
    assert split_sentences(TEXT) == SENTENCES


def test_home_assistant_style_fragments():
    chunker = SentenceChunker()
    assert chunker.add("Hel") == []
    assert chunker.add("lo there. How ") == ["Hello there."]
    assert chunker.add("are you?") == []  # a capital must follow before "?" ends a sentence
    assert chunker.add(" I") == ["How are you?"]
    assert chunker.add("'m fine") == []
    assert chunker.finish() == ["I'm fine"]
    assert chunker.finish() == []


def test_character_by_character_equals_whole_text():
    assert feed(list(TEXT)) == SENTENCES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It is 3.5 degrees. Nice.", ["It is 3.5 degrees.", "Nice."]),
        ("Ask Dr. Who. He knows.", ["Ask Dr. Who.", "He knows."]),
        ("It is 20°C. Wear a coat. I saw Tom. He waved.", ["It is 20°C.", "Wear a coat.", "I saw Tom.", "He waved."]),
        ("On Jan. 5 we met Mr. Li. Then Sen. Warren spoke.", ["On Jan. 5 we met Mr. Li.", "Then Sen. Warren spoke."]),
        ("Meet Mr. T. Smith. Then go.", ["Meet Mr. T. Smith.", "Then go."]),
        ("Version 2.0.1 is out. Update now!", ["Version 2.0.1 is out.", "Update now!"]),
        ("Fruit, e.g. Apples, are good.", ["Fruit, e.g. Apples, are good."]),
        ("See Fig. 3 for details. Done.", ["See Fig. 3 for details.", "Done."]),
        ("Wait... What? Really!", ["Wait...", "What?", "Really!"]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ],
)
def test_abbreviations_decimals_and_initials_do_not_split(text, expected):
    assert split_sentences(text) == expected


def test_lines_and_markdown_lists():
    text = "Here is the list:\n- apples\n- pears\n\n# Next\n1. Open it\n2) Close it\nDone. 3. Inline item."
    assert split_sentences(text) == [
        "Here is the list:",
        "apples",
        "pears",
        "Next",
        "Open it",
        "Close it",
        "Done.",
        "3. Inline item.",
    ]


def test_markdown_marker_split_across_fragments():
    assert feed(["Items:\n", "1", "2", ".", " ", "Twelve\n-", " ", "x\n", "-5 degrees"]) == [
        "Items:",
        "Twelve",
        "x",
        "-5 degrees",
    ]


@pytest.mark.parametrize("text", ["", "   ", "...", "\n\n?! ...\n- \n", "* * *", "#"])
def test_empty_and_punctuation_only_pieces_are_dropped(text):
    assert split_sentences(text) == []


def test_long_sentence_is_cut_at_clause_boundaries_without_cutting_words():
    sentence = (
        "When the kitchen lights are on and the hallway is dark, the system waits for motion; "
        "if nobody moves for ten minutes, everything turns off, except the porch light, "
        "which stays on until midnight because the neighbours asked for it, and that is all."
    )
    pieces = split_long(sentence, 80)
    assert pieces == [
        "When the kitchen lights are on and the hallway is dark,",
        "the system waits for motion;",
        "if nobody moves for ten minutes, everything turns off, except the porch light,",
        "which stays on until midnight because the neighbours asked for it,",
        "and that is all.",
    ]
    assert all(len(piece) <= 80 for piece in pieces)
    assert " ".join(pieces).split() == sentence.split()


def test_long_sentence_without_punctuation_is_cut_at_spaces():
    sentence = " ".join(f"word{i}" for i in range(100))
    pieces = split_sentences(sentence, 50)
    assert all(len(piece) <= 50 for piece in pieces)
    assert " ".join(pieces).split() == sentence.split()


def test_only_an_over_long_word_is_cut():
    assert split_long("a " + "x" * 25 + " b", 10) == ["a", "x" * 10, "x" * 10, "x" * 5 + " b"]


def test_streaming_gives_out_an_over_long_sentence_before_it_ends():
    words = " ".join(f"word{i}" for i in range(200)) + "."
    chunker = SentenceChunker(100)
    fragments = [words[i : i + 10] for i in range(0, len(words), 10)]
    early = [piece for fragment in fragments[:40] for piece in chunker.add(fragment)]
    assert early, "the first pieces of a long sentence must not wait for its end"
    late = [piece for fragment in fragments[40:] for piece in chunker.add(fragment)] + chunker.finish()
    assert early + late == split_sentences(words, 100)


def test_max_chars_must_be_positive():
    with pytest.raises(ValueError):
        SentenceChunker(0)


# ---------------------------------------------------------------- fragment invariance

_PLAIN = st.sampled_from("the lights are on in kitchen and a very long hallway stays dark".split())
_WORD = st.one_of(
    _PLAIN,  # weighted: long unpunctuated runs
    _PLAIN,
    _PLAIN,
    st.sampled_from(["Hello", "World", "Tom", "Amy", "OK", "TV", "I", "A", "Lights", "Kitchen"]),
    st.sampled_from(["Done.", "Why?", "Stop!", "Tom.", "OK.", "Yes,", "so;", "note:", "20°C.", "5 km.", "end."]),
    st.sampled_from(["3.5", "10", "2024", "1.", "2)", "12.", "42.", "0.5%", "9:30"]),
    st.sampled_from(["Dr.", "Mr.", "St.", "e.g.", "vs.", "Prof.", "J.", "U.S.", "Jan.", "...", "—", "-", "'quoted'"]),
    st.sampled_from(['"Hi."', "(aside)", "**bold**", "*", "\n", "\n\n", "\n- ", "\n1. ", "\n# ", "\r\n"]),
    st.sampled_from(["😀", "。", "\t"]),
    st.text(min_size=1, max_size=3),  # anything at all
)
_SEPARATOR = st.sampled_from([" ", " ", " ", "  ", "\t", ""])


@st.composite
def texts_and_cuts(draw):
    size = draw(st.integers(0, 100))
    parts = draw(st.lists(st.tuples(_WORD, _SEPARATOR), min_size=size, max_size=size))
    text = "".join(word + sep for word, sep in parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=30)))
    fragments = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    return text, fragments, draw(st.sampled_from([20, 40, 200]))


@settings(max_examples=250, deadline=None)
@given(case=texts_and_cuts())
def test_any_fragmentation_gives_the_same_sentences(case):
    text, fragments, max_chars = case
    whole = split_sentences(text, max_chars)
    assert feed(fragments, max_chars) == whole
    for piece in whole:
        assert 0 < len(piece) <= max_chars
        assert piece == piece.strip()
        assert any(ch.isalnum() for ch in piece)


# ---------------------------------------------------------------- prepare_text


def test_prepare_text_splits_raw_then_normalises(tokenizer):
    text = "Dr. Smith paid $3.50 on 2024-05-01. It was 21.5°C!\n- Lights: 50%\n- Fan: off 😀"
    assert prepare_text(text, tokenizer) == [
        "Doctor Smith paid three dollars and fifty cents on May first, twenty twenty-four.",
        "It was twenty-one point five degrees Celsius!",
        "Lights: fifty percent",
        "Fan: off",
    ]


def test_prepare_text_re_splits_what_normalisation_lengthened(tokenizer):
    text = "Totals: $1,234,567.89, $2,345,678.90 and $3,456,789.01."
    assert len(text) < 60
    pieces = prepare_text(text, tokenizer, max_chars=60)
    assert len(pieces) > 1
    assert all(len(piece) <= 60 for piece in pieces)
    for piece in pieces:
        tokenizer.encode(piece)


def test_prepare_text_with_nothing_sayable_is_empty(tokenizer):
    assert prepare_text("😀 🎉 ... \n\n Привет", tokenizer) == []


def test_prepare_sentence_for_streamed_sentences(tokenizer):
    chunker = SentenceChunker()
    sentences = chunker.add("It is 5") + chunker.add("°C. Wear a co") + chunker.add("at.") + chunker.finish()
    assert [p for s in sentences for p in prepare_sentence(s, tokenizer)] == [
        "It is five degrees Celsius.",
        "Wear a coat.",
    ]
