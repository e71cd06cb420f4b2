"""User-facing errors shared by every layer.

Each error carries a short ``code`` that the server sends in a Wyoming ``error`` event,
so Home Assistant users (and their logs) see what went wrong in plain words.
"""

from __future__ import annotations


class LinaError(Exception):
    """Base class: an error whose message is meant for the person who caused it."""

    code = "lina-error"


class CheckpointError(LinaError):
    """A model or codec file is missing, unreadable or does not match the architecture."""

    code = "checkpoint-error"


class UnsupportedTextError(LinaError):
    """Text the model cannot say (nothing speakable left, or too long)."""

    code = "unsupported-text"


class TextTooLongError(LinaError):
    code = "text-too-long"


class UnknownVoiceError(LinaError):
    code = "unknown-voice"


class VoiceError(LinaError):
    """A voice exists but is broken, or a voice cannot be created as asked."""

    code = "voice-error"


class AudioFileError(LinaError):
    """An audio file cannot be read or holds no usable audio."""

    code = "audio-file-error"


class OverloadedError(LinaError):
    """The server is at its queue or connection limit; try again shortly."""

    code = "overloaded"


class DeadlineExceededError(LinaError):
    code = "deadline-exceeded"


class NoAudioError(LinaError):
    """Generation ended without audio for a sentence, also on its retry."""

    code = "no-audio"


class ShuttingDownError(LinaError):
    """The server is stopping: requests still running end with this."""

    code = "shutting-down"


class SynthesisError(LinaError):
    """Generation failed for this request (the server keeps serving others)."""

    code = "synthesis-failed"


def os_error_line(err: OSError) -> str:
    """A failed file operation in one line: what, where and why ("No space left on device")."""
    where = f" {err.filename}" if err.filename else ""
    other = f" -> {err.filename2}" if err.filename2 else ""
    return f"cannot write or read{where}{other}: {err.strerror or err}"
