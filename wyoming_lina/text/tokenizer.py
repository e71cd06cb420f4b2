"""The Lina text tokenizer: upstream's ``bpe256.json`` through the ``tokenizers`` library.

Upstream encodes ``"[BOS]" + text + "[EOS]"`` and the model was trained on exactly those
ids, so :meth:`LinaTokenizer.encode` does the same (checked against the fixture's
``text_ids``). The vocabulary declares ``[UNK]`` without containing it, so any character
outside it makes ``tokenizers`` fail with an opaque message; here that becomes an
:class:`~wyoming_lina.errors.UnsupportedTextError` naming the characters, raised before
the library is called. Run text through :func:`~wyoming_lina.text.normalize_text` first.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer

from ..errors import CheckpointError, UnsupportedTextError
from .alphabet import CACHE_LIMIT

BOS = "[BOS]"
EOS = "[EOS]"
PAD = "[PAD]"


class LinaTokenizer:
    """Character/BPE tokenizer of Lina-Speech (256 tokens: PAD 0, BOS 1, EOS 2)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._tokenizer = Tokenizer.from_file(str(self.path))
        except Exception as err:  # tokenizers raises plain Exception for bad files
            raise CheckpointError(f"cannot read tokenizer {self.path}: {err}") from err
        self.special_tokens: frozenset[str] = frozenset(
            token.content for token in self._tokenizer.get_added_tokens_decoder().values()
        )
        self.alphabet: frozenset[str] = frozenset(
            token
            for token in self._tokenizer.get_vocab(with_added_tokens=False)
            if len(token) == 1 and token not in self.special_tokens
        )
        self.bos_id = self._token_id(BOS)
        self.eos_id = self._token_id(EOS)
        self.pad_id = self._token_id(PAD)
        self._supported: dict[str, bool] = {}

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def is_supported(self, ch: str) -> bool:
        """True when the single character ``ch`` survives the tokenizer's normaliser and vocab."""
        known = self._supported.get(ch)
        if known is None:
            known = self._check_character(ch)
            if len(self._supported) < CACHE_LIMIT:
                self._supported[ch] = known
        return known

    def unsupported_characters(self, text: str) -> set[str]:
        """The characters of ``text`` that would make :meth:`encode` fail."""
        return {ch for ch in set(text) if not self.is_supported(ch)}

    def encode(self, text: str) -> list[int]:
        """Token ids of ``"[BOS]" + text + "[EOS]"``, exactly as upstream builds them."""
        self._check_text(text)
        try:
            return list(self._tokenizer.encode(BOS + text + EOS).ids)
        except Exception as err:  # defensive: _check_text should have caught every cause
            raise UnsupportedTextError(f"the tokenizer cannot encode {text!r}: {err}") from err

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Concatenated token strings (lower-case text), for debugging and logs."""
        pieces = []
        for token_id in ids:
            token = self._tokenizer.id_to_token(int(token_id))
            if token is None:
                token = f"<{int(token_id)}?>"
            elif skip_special_tokens and token in self.special_tokens:
                continue
            pieces.append(token)
        return "".join(pieces)

    def _check_character(self, ch: str) -> bool:
        normaliser = self._tokenizer.normalizer
        try:
            normalised = normaliser.normalize_str(ch) if normaliser is not None else ch
        except Exception:  # lone surrogates cannot even be passed to the library
            return False
        return bool(normalised) and all(c in self.alphabet for c in normalised)

    def _check_text(self, text: str) -> None:
        bad = self.unsupported_characters(text)
        if bad:
            raise UnsupportedTextError(f"text has characters the model cannot say: {describe_characters(bad)}")
        reserved = sorted(token for token in self.special_tokens if token in text)
        if reserved:
            raise UnsupportedTextError(f"text contains reserved tokenizer markers: {', '.join(reserved)}")

    def _token_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise CheckpointError(f"tokenizer {self.path} has no {token} token")
        return token_id

    def __repr__(self) -> str:
        return f"LinaTokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"


def describe_characters(characters: Iterable[str]) -> str:
    """``'😀' (U+1F600), '\\t' (U+0009)``: readable in logs even for invisible characters."""
    return ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in sorted(characters))
