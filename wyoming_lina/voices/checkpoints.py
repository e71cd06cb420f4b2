"""Tuning checkpoints: what a resumed run needs, and the checks that it may resume.

A checkpoint holds the state, Adam's moments, the step, the best state so far and the RNG,
with the settings that define the run and fingerprints of the model and the training clips:
a checkpoint resumes only with the same ones (else the result would be neither run).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from ..atomic import atomic_write_bytes
from ..errors import VoiceError
from .dataset import TuningExample

CHECKPOINT_FORMAT = 1
# Settings that define the run: a checkpoint can only be resumed with the same values.
STRUCTURAL = (
    "rank",
    "batch_size",
    "grad_accum",
    "seed",
    "val_clips",
    "bucket_batches",
    "max_clip_seconds",
    "min_clip_seconds",
)


def data_fingerprint(train: list[TuningExample], val: list[TuningExample]) -> str:
    digest = hashlib.sha256()
    for part, examples in (("train", train), ("val", val)):
        digest.update(part.encode())
        for e in examples:
            digest.update(e.id.encode() + b"\0" + bytes(str(e.text_ids), "ascii"))
            digest.update(e.codes.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()[:32]


def model_fingerprint(model) -> str:
    digest = hashlib.sha256(repr(model.config).encode())
    digest.update(model.logits_head.weight.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:32]


def write_checkpoint(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a damaged file
        raise VoiceError(f"cannot read the tuning checkpoint {path}: {err}; start over with --overwrite") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise VoiceError(f"{path} is not a tuning checkpoint of this version; start over with --overwrite")
    return ckpt


def check_resumable(ckpt: dict, config, fingerprint: dict, path: Path) -> None:
    saved = ckpt.get("config", {})
    changed = [
        f"{k} ({saved.get(k)!r} -> {getattr(config, k)!r})" for k in STRUCTURAL if saved.get(k) != getattr(config, k)
    ]
    if changed:
        raise VoiceError(f"cannot resume {path}: settings differ: {', '.join(changed)}")
    if ckpt.get("fingerprint", {}).get("model") != fingerprint["model"]:
        raise VoiceError(f"cannot resume {path}: it was made with another model")
    if ckpt.get("fingerprint", {}).get("data") != fingerprint["data"]:
        raise VoiceError(
            f"cannot resume {path}: the training clips changed since it was made; start over with --overwrite"
        )
