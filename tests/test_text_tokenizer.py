"""LinaTokenizer against upstream's bpe256.json and the fixture's reference ids."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from wyoming_lina.errors import CheckpointError, UnsupportedTextError
from wyoming_lina.text import LINA_ALPHABET, LinaTokenizer

FIXTURE_TEXT = "Hello world, this is a test of Lina speech."


def test_encode_reproduces_upstream_text_ids(tokenizer, lina_dir):
    expected = load_file(str(lina_dir / "vectors.safetensors"))["text_ids"][0].tolist()
    assert tokenizer.encode(FIXTURE_TEXT) == expected
    assert expected[0] == tokenizer.bos_id == 1
    assert expected[-1] == tokenizer.eos_id == 2
    assert tokenizer.pad_id == 0
    assert tokenizer.vocab_size == 256


def test_decode_round_trips_to_lowercase_text(tokenizer):
    ids = tokenizer.encode(FIXTURE_TEXT)
    assert tokenizer.decode(ids) == "[BOS]" + FIXTURE_TEXT.lower() + "[EOS]"
    assert tokenizer.decode(ids, skip_special_tokens=True) == FIXTURE_TEXT.lower()
    assert tokenizer.decode([9999]) == "<9999?>"


def test_alphabet_is_the_single_character_vocabulary(tokenizer, lina_dir):
    vocab = json.loads((lina_dir / "bpe256.json").read_text(encoding="utf-8"))["model"]["vocab"]
    singles = {token for token in vocab if len(token) == 1}
    assert tokenizer.alphabet == singles == LINA_ALPHABET
    assert not any(ch.isdigit() for ch in tokenizer.alphabet)


@pytest.mark.parametrize("ch", ["a", "Z", "É", "é", "Œ", "—", " ", ".", "?", "'", '"', "K"])  # K: Kelvin sign
def test_supported_characters(tokenizer, ch):
    assert tokenizer.is_supported(ch)
    tokenizer.encode(ch)


@pytest.mark.parametrize("ch", ["1", "&", "%", "\n", "\t", "ü", "ß", "😀", "İ", "\ud800", "€", "…"])
def test_unsupported_characters(tokenizer, ch):
    assert not tokenizer.is_supported(ch)
    assert tokenizer.unsupported_characters(f"ok {ch} ok") == {ch}


def test_encode_rejects_unsupported_characters_by_name(tokenizer):
    with pytest.raises(UnsupportedTextError) as info:
        tokenizer.encode("It is 20° & 50%\t😀")
    message = str(info.value)
    for ch in ("'2'", "'0'", "'°'", "'&'", "'5'", "'%'", "'\\t'", "'😀'", "U+1F600"):
        assert ch in message
    assert info.value.code == "unsupported-text"


def test_encode_never_leaks_tokenizers_errors(tokenizer):
    with pytest.raises(UnsupportedTextError):
        tokenizer.encode("lone surrogate \ud800")


def test_encode_rejects_reserved_markers(tokenizer):
    with pytest.raises(UnsupportedTextError, match=r"\[EOS\]"):
        tokenizer.encode("hello [EOS] world")
    # lower case is ordinary text to the tokenizer (its added tokens are not normalised)
    assert 2 not in tokenizer.encode("hello [eos] world")[1:-1]


def test_empty_text_is_bos_eos(tokenizer):
    assert tokenizer.encode("") == [1, 2]


def test_missing_or_broken_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError):
        LinaTokenizer(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError):
        LinaTokenizer(broken)
