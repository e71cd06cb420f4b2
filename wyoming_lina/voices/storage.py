"""Voice folders on disk: made complete under a temporary name, then renamed into place.

A reader (the server rescanning while the CLI or the studio writes) sees no folder or a
complete one, never half of one: a new voice is built in ``voices/.tmp-<name>-<random>/`` and
renamed to ``voices/<name>/``; a replaced or removed voice is first renamed to
``voices/.trash-<name>-<random>/`` and then deleted. Hidden names are never scanned as voices.
Single files inside a folder are written through ``wyoming_lina.atomic`` (``files.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import VoiceError

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


class VoiceFolders:
    """Creating, replacing and removing whole voice folders in ``voices_dir``."""

    def __init__(self, voices_dir: Path):
        self.voices_dir = voices_dir

    def path(self, name: str) -> Path:
        return self.voices_dir / name

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A new empty folder to build voice ``name`` in; removed afterwards unless committed."""
        self.voices_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.voices_dir / f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def commit(self, staged: Path, name: str, replacing: Path | None = None) -> None:
        """Rename the ``staged`` folder to ``name``; the folder it replaces (if any) is moved
        aside first and deleted after, or put back when the rename fails."""
        trash = None
        if replacing is not None:
            trash = self._trash_path(replacing.name)
            os.rename(replacing, trash)
        try:
            os.rename(staged, self.path(name))
        except OSError as err:
            if trash is not None:
                os.rename(trash, replacing)
            raise VoiceError(f"cannot create voice {name!r}: {err}") from err
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def remove(self, folder: Path) -> None:
        """Delete a voice folder: gone from the scan at once (renamed), then deleted."""
        trash = self._trash_path(folder.name)
        os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def _trash_path(self, name: str) -> Path:
        return self.voices_dir / f"{TRASH_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
