"""Checking a prompt clip's transcript: what the model reads before every sentence of the voice.

The engine feeds a prompt voice's row ``"[BOS]" + transcript + " " + sentence piece + "[EOS]"``
and takes at most ``min(model text length, MAX_TEXT_TOKENS)`` tokens, with pieces of up to
``MAX_SENTENCE_CHARS`` characters: ``defaults.max_transcript_tokens`` is what is left for the
transcript (309 tokens with the published model). A transcript over it could never be spoken
with a sentence, so it is refused when the voice is added (and a voice file holding one is
not usable) with the limit in words, estimated from the transcript's own tokens per word.

Without a tokenizer (the CLI without model files) the bound is in characters:
``MAX_CHARS_PER_TOKEN`` characters per token. English averages 1.5 to 1.7 characters per token
with the model's tokenizer (its longest pieces have 5), so no transcript that fits is refused, and
the exact check follows when the server loads the voice.
"""

from __future__ import annotations

from ..defaults import max_transcript_tokens
from ..errors import LinaError, VoiceError

MAX_CHARS_PER_TOKEN = 3


def transcript_char_limit(model_text_len: int | None = None) -> int:
    """The most characters a transcript may have, whatever its tokens."""
    return max_transcript_tokens(model_text_len) * MAX_CHARS_PER_TOKEN


MAX_TRANSCRIPT_CHARS = transcript_char_limit()  # 927: the bound of a transcript in a voice file


def _too_long(prefix: str, words: int, size: int, limit: int, unit: str) -> VoiceError:
    words_limit = int(limit * words / max(1, size))
    return VoiceError(
        f"{prefix}the transcript is too long for the model: {words} words ({size} {unit}); the model reads "
        f"it before every sentence, so it may have at most about {words_limit} words ({limit} {unit}). "
        "Use a shorter clip (3 to 15 s) with its transcript"
    )


def check_transcript(text: str | None, tokenizer, model_text_len: int | None = None, prefix: str = "") -> None:
    """The transcript must fit the model's text budget and, with a tokenizer, survive
    normalisation and tokenisation. VoiceError says what is wrong."""
    if not text:
        return
    words = len(text.split())
    char_limit = transcript_char_limit(model_text_len)
    if tokenizer is not None and len(text) <= 10 * char_limit:  # counted in tokens: the closest words estimate
        _check_tokens(text, words, tokenizer, model_text_len, prefix)
    if len(text) > char_limit:
        raise _too_long(prefix, words, len(text), char_limit, "characters")


def _check_tokens(text: str, words: int, tokenizer, model_text_len: int | None, prefix: str) -> None:
    from ..text import normalize_text

    try:
        spoken = normalize_text(text, tokenizer)
        ids = tokenizer.encode(spoken)
    except LinaError as err:
        raise VoiceError(f"{prefix}the transcript cannot be read by the model: {err}") from err
    if not spoken.strip(" .,;:!?-'\""):
        raise VoiceError(f"{prefix}the transcript has nothing the model can say")
    tokens, budget = len(ids) - 2, max_transcript_tokens(model_text_len)  # without [BOS] and [EOS]
    if tokens > budget:
        raise _too_long(prefix, words, tokens, budget, "tokens")
