"""Voice folders on disk: made complete under a temporary name, then renamed into place.

A reader (the server rescanning while the CLI or the studio writes) sees no folder or a
complete one, never half of one: a new voice is built in ``voices/.tmp-<name>-<random>/`` and
renamed to ``voices/<name>/``; a replaced or removed voice is first renamed to
``voices/.trash-<name>-<random>/`` and then deleted. Hidden names are never scanned as voices.
Single files inside a folder are written through ``wyoming_lina.atomic`` (``files.py``).

Two writers may race for one name (two servers making the built-in voice on their first
start): the rename of a complete folder onto an existing one fails, so exactly one wins and
the other hears :class:`VoiceExistsError`, leaving the winner's voice as it is. What a killed
writer leaves (``.tmp-*``, ``.trash-*`` folders, atomic writes' ``.*.tmp`` files) is removed
at the server's start once it is ``LEFTOVER_SECONDS`` old: no live writer takes that long.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import VoiceError

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
LEFTOVER_SECONDS = 10 * 60  # an add takes seconds (a clip of at most 30 s is encoded once)


class VoiceExistsError(VoiceError):
    """The name is taken (in any case): the caller may replace the voice or choose another name."""

    def __init__(self, message: str, existing: str):
        super().__init__(message)
        self.existing = existing  # the name as the existing voice spells it


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
        aside first and deleted after, or put back when the rename fails. VoiceExistsError
        when another writer made ``name`` first."""
        trash = None
        if replacing is not None:
            trash = self._trash_path(replacing.name)
            os.rename(replacing, trash)
        target = self.path(name)
        try:
            os.rename(staged, target)  # fails onto a folder that is not empty: one racer wins
        except OSError as err:
            if trash is not None:
                os.rename(trash, replacing)
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY) and target.exists():
                raise VoiceExistsError(
                    f"voice {name!r} already exists (made meanwhile by another writer)", name
                ) from err
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

    def clean_leftovers(self, max_age: float = LEFTOVER_SECONDS, now: float | None = None) -> list[str]:
        """Remove what killed writers left, once ``max_age`` seconds old: ``.tmp-*`` and
        ``.trash-*`` folders, and atomic writes' ``.*.tmp`` files in the voice folders. Returns
        the paths removed (relative to the voices folder)."""
        now = time.time() if now is None else now
        removed = []

        def old(entry: os.DirEntry) -> bool:
            try:
                return now - entry.stat(follow_symlinks=False).st_mtime >= max_age
            except OSError:
                return False

        for child in _entries(self.voices_dir):
            if child.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                if child.is_dir(follow_symlinks=False) and old(child):
                    shutil.rmtree(child.path, ignore_errors=True)
                    removed.append(child.name)
            elif child.is_dir(follow_symlinks=False):
                for item in _entries(Path(child.path)):
                    if (
                        item.name.startswith(".")
                        and item.name.endswith(".tmp")
                        and item.is_file(follow_symlinks=False)
                        and old(item)
                    ):
                        with contextlib.suppress(OSError):
                            os.unlink(item.path)
                            removed.append(f"{child.name}/{item.name}")
        return removed


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        return list(os.scandir(folder))
    except OSError:
        return []
