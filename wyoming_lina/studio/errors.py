"""Every failure of the studio's API as one JSON shape: ``{"error": "<a sentence>", "code": "<code>"}``.

The sentence is for the person at the page (the page shows it as it is); the code is for
programs. Errors of the rest of the server (``LinaError``) keep their code and get the HTTP
status that says whose fault it was.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import (
    AudioFileError,
    DeadlineExceededError,
    LinaError,
    OverloadedError,
    TextTooLongError,
    UnknownVoiceError,
    UnsupportedTextError,
    VoiceError,
)
from ..server.asr import NoTranscriberError, TranscriptionError


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


def status_for(err: LinaError) -> int:
    """The HTTP status of a server error (the request's fault: 4xx; someone else's: 5xx)."""
    if isinstance(err, UnknownVoiceError):
        return 404
    if isinstance(err, NoTranscriberError):
        return 400
    if isinstance(err, TranscriptionError):
        return 502  # the speech-to-text server failed, not this request
    if isinstance(err, AudioFileError):
        return 413 if getattr(err, "reason", "") in ("too large", "too long") else 400
    if isinstance(err, (VoiceError, TextTooLongError, UnsupportedTextError)):
        return 400
    if isinstance(err, OverloadedError):
        return 503
    if isinstance(err, DeadlineExceededError):
        return 504
    return 500


def sentence(message: str) -> str:
    """A message as a sentence: capital first letter, final full stop."""
    message = message.strip()
    if not message:
        return "Something went wrong."
    message = message[0].upper() + message[1:]
    return message if message[-1] in ".!?" else message + "."


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status, headers=headers)
