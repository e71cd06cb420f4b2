"""The ``info`` answer to ``describe``: one TTS program and every voice, read fresh each time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from wyoming.info import Attribution, Info, TtsProgram, TtsVoice

from .. import __version__
from ..voices.voice import VoiceInfo

_LOGGER = logging.getLogger(__name__)

PROGRAM_NAME = "lina"
LINA_URL = "https://github.com/theodorblackbird/lina-speech"
WAVTOKENIZER_URL = "https://github.com/jishengpeng/WavTokenizer"
PROGRAM_ATTRIBUTION = Attribution(name="Lina-Speech (Lemerle et al., IRCAM) with WavTokenizer", url=LINA_URL)
VOICE_ATTRIBUTION = Attribution(name="Lina-Speech voice (weights CC BY-NC 4.0)", url=LINA_URL)
FALLBACK_LANGUAGES = ("en",)  # the published model speaks English


class InfoBuilder:
    """Builds ``Info`` from the current voice list (``list_voices`` rescans the store)."""

    def __init__(
        self, list_voices: Callable[[], Iterable[VoiceInfo]], *, streaming: bool = True, version: str = __version__
    ):
        self.list_voices = list_voices
        self.streaming = streaming
        self.version = version

    def voices(self, infos: Iterable[VoiceInfo]) -> list[TtsVoice]:
        out = []
        for info in infos:
            out.append(
                TtsVoice(
                    name=info.name,
                    description=info.description or info.name,
                    attribution=VOICE_ATTRIBUTION,
                    installed=bool(info.installed),
                    version=self.version,
                    languages=list(info.languages) or list(FALLBACK_LANGUAGES),  # HA needs one
                )
            )
        return out

    def build(self, infos: Iterable[VoiceInfo] | None = None) -> Info:
        """``infos``: the voice list if already read (e.g. in a worker thread), else read now."""
        voices = self.voices(self.list_voices() if infos is None else infos)
        program = TtsProgram(
            name=PROGRAM_NAME,
            description=f"Lina-Speech voice-cloning text to speech, WavTokenizer codec ({WAVTOKENIZER_URL}), 24 kHz",
            attribution=PROGRAM_ATTRIBUTION,
            installed=True,
            version=self.version,
            voices=voices,
            supports_synthesize_streaming=self.streaming,
        )
        return Info(tts=[program])
