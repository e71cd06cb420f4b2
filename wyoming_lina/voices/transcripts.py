"""Checking a prompt clip's transcript: what the model reads before every sentence of the voice."""

from __future__ import annotations

from ..errors import LinaError, VoiceError


def check_transcript(text: str | None, tokenizer, prefix: str = "") -> None:
    """With a tokenizer: the transcript must survive normalisation and tokenisation."""
    if tokenizer is None or not text:
        return
    from ..text import normalize_text

    try:
        spoken = normalize_text(text, tokenizer)
        tokenizer.encode(spoken)
    except LinaError as err:
        raise VoiceError(f"{prefix}the transcript cannot be read by the model: {err}") from err
    if not spoken.strip(" .,;:!?-'\""):
        raise VoiceError(f"{prefix}the transcript has nothing the model can say")
