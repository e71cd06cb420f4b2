"""A voice as the engine uses it: what conditions the model, whichever way it was made."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import InitialState


@dataclass(frozen=True)
class VoiceInfo:
    """What Home Assistant is shown for a voice (Wyoming ``TtsVoice``)."""

    name: str
    description: str
    languages: tuple[str, ...]
    installed: bool = True
    kind: str = "prompt"  # "prompt", "state" or "prompt+state"
    problem: str = ""  # why the voice is not installed (shown by ``voice list``, logged once)


@dataclass(frozen=True)
class Voice:
    """Conditioning for generation: a prompt clip (codes + transcript), a tuned initial state, or both."""

    name: str
    languages: tuple[str, ...] = ("en",)
    description: str = ""
    prompt_codes: torch.Tensor | None = None  # [P] codec codes of the clip
    prompt_text: str | None = None  # the clip's transcript
    initial_state: InitialState | None = None
    frames_per_char: float | None = None  # speaking rate recorded by tuning (engine.lengths)

    def __post_init__(self):
        if (self.prompt_codes is None) != (self.prompt_text is None):
            raise ValueError(f"voice {self.name!r}: a prompt needs both its codes and its transcript")
        if not self.languages:
            raise ValueError(f"voice {self.name!r} needs at least one language")

    @property
    def info(self) -> VoiceInfo:
        kinds = [k for k, v in (("prompt", self.prompt_codes), ("state", self.initial_state)) if v is not None]
        return VoiceInfo(self.name, self.description, self.languages, True, "+".join(kinds) or "plain")
