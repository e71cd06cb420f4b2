"""The files of a voice folder, and the small helpers that read and write them safely.

Layout of ``<data_dir>/voices/<name>/``::

    voice.yaml                 kind, languages, description, created, source (and maybe text)
    prompt.wav                 the trimmed clip, 24 kHz 16-bit mono (prompt voices)
    prompt.txt                 its exact transcript (or ``text:`` in voice.yaml)
    prompt.codes.safetensors   cache: the clip's codec codes, with the clip's SHA-256 and the
                               codec's fingerprint in the metadata (rebuilt when either changes)
    state.safetensors          tuned initial state in upstream's speaker-state layout (state voices)
    tuning/                    initial-state tuning work files (checkpoint, encoded training clips)

Everything is written to a temporary name and renamed into place, so a reader (the server
rescanning while the CLI writes) sees either the old file or the new one, never half of one;
files get the umask's mode (0644 by default), readable by the group that shares the data dir.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from pathlib import Path

import torch
import yaml

from ..atomic import atomic_write_bytes
from ..errors import VoiceError
from ..safe_yaml import YamlError, load_yaml

VOICES_DIR = "voices"
VOICE_FILE = "voice.yaml"
PROMPT_AUDIO = "prompt.wav"
PROMPT_TEXT = "prompt.txt"
PROMPT_CODES = "prompt.codes.safetensors"
STATE_FILE = "state.safetensors"
TUNING_DIR = "tuning"
KINDS = ("prompt", "state", "prompt+state")
CODES_FORMAT = "wyoming-lina-prompt-codes/1"
# YAML read by the server on every rescan: read no further (and see safe_yaml: no aliases, depth)
VOICE_FILE_MAX_BYTES = 32 * 1024  # voice.yaml, settings.yaml: the tools write under 1 KiB
VOICES_FILE_MAX_BYTES = 1024 * 1024  # a voices file: room for about a thousand voices with transcripts

_STATE_KEY_RE = re.compile(r"layer(\d+)_([kv])")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_FINGERPRINTS: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def codec_fingerprint(codec) -> str:
    """Identifies the codec's code space: SHA-256 of its codebook (float32) and sizes.

    Codes encoded by one codec mean nothing to a codec with another codebook, so the prompt
    code cache is keyed by this. Computed once per codec object."""
    known = _FINGERPRINTS.get(codec)
    if known is None:
        embed = codec.quantizer.embed.detach().float().cpu().contiguous()
        digest = hashlib.sha256(f"{tuple(embed.shape)}|{codec.sample_rate}|{codec.hop_length}|".encode())
        digest.update(embed.numpy().tobytes())
        known = digest.hexdigest()[:32]
        _FINGERPRINTS[codec] = known
    return known


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_yaml(path: Path, data: dict) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def read_yaml_mapping(path: Path, max_bytes: int = VOICE_FILE_MAX_BYTES, what: str = "the file") -> dict:
    """A YAML file that must hold a mapping (an empty file is an empty one), read through
    ``wyoming_lina.safe_yaml``; VoiceError in one line naming the file and the problem otherwise."""
    try:
        data = load_yaml(path, max_bytes=max_bytes, what=what)
    except OSError as err:
        raise VoiceError(f"cannot read {path}: {err.strerror or err}") from err
    except YamlError as err:
        raise VoiceError(str(err)) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VoiceError(f"{path} must hold a mapping of settings, not a {type(data).__name__}")
    return data


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors written to a temporary file, then renamed into place."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise VoiceError(f"cannot read {path}: {err}") from err


def inspect_state_tensors(tensors: dict[str, torch.Tensor], where: str, config=None) -> tuple[int, int]:
    """Check an upstream speaker state's layout; return (layers, rank).

    Without ``config`` only the layout is checked (keys ``layer{i}_k``/``layer{i}_v`` for
    i = 0..L-1, shapes [1, r, H, dk, 1] and [1, r, H, 1, dv], finite values); with a model
    config every shape must also fit the model."""
    layers: dict[int, set[str]] = {}
    for key in tensors:
        m = _STATE_KEY_RE.fullmatch(key)
        if not m:
            raise VoiceError(f"{where}: unexpected tensor {key!r}; a speaker state holds only layer<i>_k / layer<i>_v")
        layers.setdefault(int(m.group(1)), set()).add(m.group(2))
    if not layers:
        raise VoiceError(f"{where}: holds no tensors; not a speaker state")
    n = max(layers) + 1
    missing = [f"layer{i}_{kv}" for i in range(n) for kv in "kv" if kv not in layers.get(i, ())]
    if missing:
        raise VoiceError(f"{where}: missing tensors {', '.join(missing)}")
    rank = None
    for i in range(n):
        k, v = tensors[f"layer{i}_k"], tensors[f"layer{i}_v"]
        if (
            k.dim() != 5
            or v.dim() != 5
            or k.shape[0] != 1
            or k.shape[4] != 1
            or v.shape[3] != 1
            or k.shape[:3] != v.shape[:3]
        ):
            raise VoiceError(
                f"{where}: layer{i} shapes {list(k.shape)} / {list(v.shape)} "
                "are not [1, r, H, dk, 1] / [1, r, H, 1, dv]"
            )
        if rank is None:
            rank = k.shape[1]
        elif k.shape[1] != rank:
            raise VoiceError(f"{where}: layer{i} has rank {k.shape[1]}, layer0 rank {rank}")
        if not (torch.isfinite(k).all() and torch.isfinite(v).all()):
            raise VoiceError(f"{where}: layer{i} holds NaN or infinite values")
    if config is not None:
        g = config.gla
        if n != 2 * config.n_layer:
            raise VoiceError(
                f"{where}: has {n} layers; this model has {2 * config.n_layer} (a state for another model?)"
            )
        want_k, want_v = [1, rank, g.heads, g.head_k, 1], [1, rank, g.heads, 1, g.head_v]
        for i in range(n):
            k, v = list(tensors[f"layer{i}_k"].shape), list(tensors[f"layer{i}_v"].shape)
            if k != want_k or v != want_v:
                raise VoiceError(
                    f"{where}: layer{i} shapes {k} / {v} do not fit this model ({want_k} / {want_v}): "
                    "a state tuned for another model?"
                )
    return n, int(rank)
