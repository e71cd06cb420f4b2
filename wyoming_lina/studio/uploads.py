"""Uploaded files, written to disk as they arrive and never larger than allowed.

The body is streamed part by part into ``<data_dir>/studio/uploads/``: a file that passes its
size limit is refused while it is still arriving (nothing large is held in memory, nothing is
decoded), and every upload is deleted when its request ends. File names from the client are
never used as paths: files get names the studio makes up.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import BodyPartReader, web

TEXT_FIELD_LIMIT = 64 * 1024  # bytes of one text field (a transcript is far shorter)
_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")


class UploadError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class UploadedFile:
    field: str
    filename: str  # as the client named it: for messages only
    path: Path
    size: int
    after: dict[str, str] = field(default_factory=dict)  # text fields sent after this file (its transcript)


@dataclass
class Upload:
    folder: Path
    fields: dict[str, str] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MB"


async def receive(
    request: web.Request,
    uploads_dir: Path,
    *,
    max_file_bytes: int,
    max_files: int = 1,
    max_total_bytes: int | None = None,
) -> Upload:
    """Read a multipart/form-data body into an Upload (its folder is removed by ``discard``)."""
    total_limit = max_total_bytes or max_file_bytes * max_files
    length = request.content_length
    if length is not None and length > total_limit + TEXT_FIELD_LIMIT * 8:
        raise UploadError(413, "too-large", f"the upload is {_mib(length)}; the limit is {_mib(total_limit)}")
    upload = Upload(uploads_dir / uuid.uuid4().hex)
    if request.content_type == "application/x-www-form-urlencoded":  # a form without files
        upload.fields = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        return upload
    if not request.content_type.startswith("multipart/"):
        raise UploadError(400, "bad-request", "send the form as multipart/form-data")
    upload.folder.mkdir(parents=True)
    try:
        reader = await request.multipart()
        total = 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise UploadError(400, "bad-request", "nested multipart bodies are not accepted")
            name = part.name or ""
            if part.filename is None:
                value = await part.read(decode=True)
                if len(value) > TEXT_FIELD_LIMIT:
                    raise UploadError(413, "too-large", f"the field {name!r} is too long")
                text = value.decode("utf-8", errors="replace")
                upload.fields[name] = text
                if upload.files:
                    upload.files[-1].after.setdefault(name, text)
                continue
            if len(upload.files) >= max_files:
                raise UploadError(400, "too-many-files", f"send at most {max_files} file(s) at once")
            suffix = Path(part.filename).suffix.lower()
            path = upload.folder / f"upload-{len(upload.files) + 1}{suffix if suffix in _EXTENSIONS else '.audio'}"
            size = 0
            with open(path, "wb") as out:
                while chunk := await part.read_chunk(1 << 16):
                    size += len(chunk)
                    total += len(chunk)
                    if size > max_file_bytes:
                        raise UploadError(
                            413, "too-large", f"{part.filename} is larger than the limit of {_mib(max_file_bytes)}"
                        )
                    if total > total_limit:
                        raise UploadError(413, "too-large", f"the files are larger than {_mib(total_limit)} together")
                    out.write(chunk)
            if size == 0:
                raise UploadError(400, "empty-file", f"{part.filename or 'the file'} is empty")
            upload.files.append(UploadedFile(name, part.filename or path.name, path, size))
    except BaseException:
        upload.discard()
        raise
    return upload
