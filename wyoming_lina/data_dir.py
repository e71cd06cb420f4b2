"""The data dir: where it is by default, where the model files sit in it, and whether it is usable.

Every command (``serve``, ``speak``, ``download``, ``voice`` and ``python -m
wyoming_lina.voices.cli``) takes its default from here, so a container that sets
``WYOMING_LINA_DATA_DIR=/data`` gets the same folder for all of them. ``--data-dir`` (or
``data-dir`` in the YAML config) still wins over the variable.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from .errors import LinaError

DATA_DIR_ENV = "WYOMING_LINA_DATA_DIR"

# The converted model files, as ``wyoming-lina download`` leaves them (server/download.py).
MODELS_DIR = "models"
LINA_FILE = "lina.safetensors"
CODEC_FILE = "wavtokenizer.safetensors"
TOKENIZER_FILE = "bpe256.json"


def default_data_dir() -> Path:
    """``$WYOMING_LINA_DATA_DIR``, else ``$XDG_DATA_HOME/wyoming-lina`` (``~/.local/share/...``)."""
    explicit = os.environ.get(DATA_DIR_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "wyoming-lina"


def model_paths(data_dir: str | Path) -> dict[str, Path]:
    """The converted model files in ``data_dir``, keyed like the command-line options."""
    models = Path(data_dir) / MODELS_DIR
    return {
        "lina_checkpoint": models / LINA_FILE,
        "codec_checkpoint": models / CODEC_FILE,
        "tokenizer": models / TOKENIZER_FILE,
    }


class DataDirError(LinaError):
    """The data dir cannot be created or written by this process."""

    code = "data-dir-not-writable"


def ensure_writable(data_dir: str | Path) -> Path:
    """Create ``data_dir`` if needed and prove that this process can write there.

    Raises DataDirError with one line naming the folder, its owner and the ``chown`` that fixes
    it (in a container: the host folder mounted there), instead of a traceback later on.
    """
    path = Path(data_dir)
    probe = path / f".write-test-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise DataDirError(_not_writable_message(path, err)) from None
    return path


def _not_writable_message(path: Path, err: OSError) -> str:
    uid, gid = os.getuid(), os.getgid()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the folder that would have to hold it
    try:
        stat = existing.stat()
        owner = f"{existing} belongs to uid {stat.st_uid}:{stat.st_gid}"
    except OSError:
        owner = f"{existing} cannot be read"
    reason = err.strerror or str(err)
    if in_container():  # the fix is made on the host, to the folder mounted here
        mounted = " (docker-compose.yml mounts ./data there)" if str(existing) == "/data" else ""
        fix = f"fix it on the host: sudo chown -R {uid}:{gid} on the folder mounted at {existing}{mounted}"
    else:
        fix = f"fix: sudo chown -R {uid}:{gid} {existing}"
    return f"cannot write to the data dir {path} ({reason}): {owner}, this process runs as uid {uid}:{gid}; {fix}"


def in_container() -> bool:
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
