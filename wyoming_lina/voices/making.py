"""What goes into a new voice folder: the prompt files made from a clip, a copied speaker
state, the codes the model generated. Written into the store's staging folder, which is renamed
into place only when everything is there (``storage.py``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import VoiceError
from .clips import PROMPT_LIMITS, prepare_clip, speaking_rate_warning, write_clip
from .encoding import PromptEncoder
from .files import (
    PROMPT_AUDIO,
    PROMPT_CODES,
    PROMPT_TEXT,
    STATE_FILE,
    atomic_write_text,
    inspect_state_tensors,
    load_tensors,
    save_tensors,
    sha256_file,
)


def write_prompt(
    folder: Path, name: str, audio: str | Path, text: str, encoder: PromptEncoder
) -> tuple[list[str], str]:
    """The clip (checked, trimmed, 24 kHz), its transcript and, with a codec, its codes:
    (warnings for what merely works badly, the source line for voice.yaml)."""
    clip = prepare_clip(audio, PROMPT_LIMITS)
    warnings = list(clip.warnings)
    rate_warning = speaking_rate_warning(text, clip.seconds)
    if rate_warning:
        warnings.append(rate_warning)
    write_clip(folder / PROMPT_AUDIO, clip.samples)
    atomic_write_text(folder / PROMPT_TEXT, text + "\n")
    if encoder.codec is not None:
        codes = encoder.encode_clip(folder / PROMPT_AUDIO, trim=False)
        encoder.check_codes(codes, name)
        encoder.write_codes(folder / PROMPT_CODES, codes, "encoded", sha256_file(folder / PROMPT_AUDIO))
    source = (
        f"clip {Path(audio).name} ({clip.source_rate} Hz, {clip.source_channels} channel(s), "
        f"{clip.source_seconds:.1f} s; {clip.seconds:.1f} s after trimming silence)"
    )
    return warnings, source


def write_state_copy(folder: Path, path: Path, model_config=None) -> str:
    """An upstream speaker-state file, checked (against the model when given) and stored as
    float32; the source line for voice.yaml."""
    if not path.is_file():
        raise VoiceError(f"speaker state file not found: {path}")
    tensors, _ = load_tensors(path)
    inspect_state_tensors(tensors, path.name, model_config)
    save_tensors(folder / STATE_FILE, {k: v.float().contiguous() for k, v in sorted(tensors.items())})
    return f"speaker state {path.name}"


def write_generated(folder: Path, codes: torch.Tensor, text: str, samples, encoder: PromptEncoder) -> None:
    """Codes the model generated (they are the voice), their transcript, and their decoding
    (``samples``, 24 kHz) as prompt.wav for listening."""
    clip_sha = None
    if samples is not None:
        write_clip(folder / PROMPT_AUDIO, samples)
        clip_sha = sha256_file(folder / PROMPT_AUDIO)
    encoder.write_codes(folder / PROMPT_CODES, codes, "generated", clip_sha)
    atomic_write_text(folder / PROMPT_TEXT, " ".join(text.split()) + "\n")
