"""What many tests hand the real program: the fixture models as command-line options, and a
fixed set of voices for a synthesizer (what the voice store hands it)."""

from __future__ import annotations

from pathlib import Path

from wyoming_lina.errors import UnknownVoiceError


def model_args(lina_dir: Path, codec_dir: Path) -> list[str]:
    """The options that point a command at the fixture Lina model, codec and tokenizer."""
    return [
        "--lina-checkpoint", str(lina_dir / "model.ckpt"),
        "--codec-checkpoint", str(codec_dir / "model.ckpt"),
        "--codec-config", str(codec_dir / "config.yaml"),
        "--tokenizer", str(lina_dir / "bpe256.json"),
    ]  # fmt: skip


class Voices:
    """A fixed set of real voices (what the voice store hands the synthesizer)."""

    def __init__(self, voices):
        self.voices = {v.name: v for v in voices}

    def get(self, name):
        if name not in self.voices:
            raise UnknownVoiceError(f"no voice {name!r}; available: {', '.join(self.voices)}")
        return self.voices[name]

    def list(self):
        return [v.info for v in self.voices.values()]
