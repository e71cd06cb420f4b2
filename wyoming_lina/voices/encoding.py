"""A clip becomes prompt codes: encoded with the codec once, then read from a cache beside it.

The cache (``prompt.codes.safetensors``) records the clip's SHA-256 and the codec's
fingerprint, so it is rebuilt when either changes. Codes the model generated (the built-in
voice) are the voice itself: they are never re-encoded unless someone replaces the clip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ..codec.audio import CODEC_RATE
from ..errors import AudioFileError, VoiceError
from .clips import PROMPT_LIMITS, prepare_clip
from .files import CODES_FORMAT, codec_fingerprint, load_tensors, save_tensors, sha256_file

_LOGGER = logging.getLogger(__name__)


class PromptEncoder:
    """Encodes clips into prompt codes and keeps their caches. ``codec`` may be None (the CLI
    without model files): cached codes are then used as they are."""

    def __init__(self, codec=None, model=None):
        self.codec = codec
        self.model = model

    def encode_clip(self, path: Path, trim: bool, name: str | None = None) -> torch.Tensor:
        """The one way a clip becomes prompt codes (at ``add`` and when the cache is stale)."""
        clip = prepare_clip(path, PROMPT_LIMITS, trim=trim)
        if name is not None:
            for warning in clip.warnings:
                _LOGGER.warning("voice %r: %s", name, warning)
        return self.codec.encode_clip(clip.samples, CODEC_RATE).long().reshape(-1).cpu()

    def write_codes(self, path: Path, codes: torch.Tensor, origin: str, clip_sha: str | None) -> None:
        """The cache file: the codes, where they came from (``encoded``/``generated``), the clip's
        SHA-256 and the codec's fingerprint."""
        meta = {"format": CODES_FORMAT, "origin": origin, "frames": str(int(codes.numel()))}
        if clip_sha:
            meta["clip_sha256"] = clip_sha
        if self.codec is not None:
            meta["codec"] = codec_fingerprint(self.codec)
        save_tensors(path, {"codes": codes.long().reshape(-1).cpu()}, meta)

    def check_codes(self, codes: torch.Tensor, name: str) -> None:
        """Codes the model can read: some, all inside its (or the codec's) vocabulary."""
        if codes.numel() == 0:
            raise VoiceError(f"voice {name!r}: its clip encodes to no codes")
        limit = self.model.config.n_codes if self.model is not None else None
        if limit is None and self.codec is not None:
            limit = self.codec.codebook_size
        if int(codes.min()) < 0 or (limit is not None and int(codes.max()) >= limit):
            raise VoiceError(f"voice {name!r}: its codes lie outside the model's {limit}-code vocabulary")

    def prompt_codes(
        self,
        name: str,
        audio: Path | None,
        cache: Path,
        *,
        trimmed: bool,
        cache_problem: Callable[[str], None] | None = None,
    ) -> torch.Tensor:
        """The clip's codes: from ``cache`` when it matches the clip and codec, else encoded now
        (and cached; ``cache_problem(message)`` hears when the cache cannot be written).
        ``trimmed``: the clip's silence was trimmed when it was stored (a voice folder's clip)."""
        cached, meta = None, {}
        if cache.is_file():
            try:
                tensors, meta = load_tensors(cache)
                cached = tensors["codes"].long().reshape(-1)
                if meta.get("format") != CODES_FORMAT:
                    cached = None
            except (VoiceError, KeyError) as err:
                _LOGGER.debug("ignoring unreadable code cache %r: %s", str(cache), err)
                cached = None
        audio_present = audio is not None and audio.is_file()
        if cached is not None and meta.get("origin") == "generated" and not audio_present:
            return cached  # a generated voice (the default voice): the codes are the voice
        if not audio_present:
            raise VoiceError(f"voice {name!r}: the clip {audio} is missing")
        clip_sha = sha256_file(audio)
        if cached is not None and meta.get("clip_sha256") == clip_sha:
            if meta.get("origin") == "generated":
                return cached  # the clip is the decoded codes, unchanged: the codes stay authoritative
            if self.codec is None or meta.get("codec") == codec_fingerprint(self.codec):
                return cached
        if self.codec is None:
            raise VoiceError(
                f"voice {name!r}: its clip has not been encoded yet and no codec is loaded "
                "(the server encodes it when it starts)"
            )
        try:
            codes = self.encode_clip(audio, trim=not trimmed, name=name)
        except AudioFileError as err:
            raise VoiceError(f"voice {name!r}: {err}") from err
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            self.write_codes(cache, codes, "encoded", clip_sha)
        except OSError as err:
            if cache_problem is not None:
                cache_problem(f"voice {name!r}: cannot cache its codes in {cache}: {err}")
        _LOGGER.info("voice %r: encoded its clip (%d codes)", name, len(codes))
        return codes
