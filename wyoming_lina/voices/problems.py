"""Problems with voices, logged once each: again only when the problem changes.

The server rescans the voices on every ``describe`` (Home Assistant asks often), so a broken
voice would otherwise fill the log. Each problem is filed under a subject: what it is about
(a :class:`Topic`) and which one (a voice's name key, a folder's name). Everything logged is
made printable first (:func:`printable`): folder names on disk and names in a YAML file are
not validated before they are reported, and a newline in one must not forge a log line.
"""

from __future__ import annotations

import enum
import logging

MAX_LOGGED_CHARS = 1000  # a problem message is cut here in the log (a path or YAML error can be long)


class Topic(enum.Enum):
    """What a problem is about; the key beside it says which one."""

    VOICE = "voice"  # a voice that is not usable (key: its name key)
    VOICES_DIR = "voices dir"  # the voices folder cannot be read (key: "")
    FOLDER = "folder"  # a folder in the voices folder that is not a voice (key: its name on disk)
    VOICES_FILE = "voices file"  # the --voices-file YAML as a whole (key: "")
    FILE_ENTRY = "voices-file entry"  # a name the voices file lists and that is skipped (key: the name)
    CLASH = "clash"  # a voices-file voice hiding a voice folder (key: the name key)
    CODE_CACHE = "code cache"  # a prompt-code cache that cannot be written (key: the name key)


Subject = tuple[Topic, str]


def printable(text: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` with control and other unprintable characters escaped (as ``repr`` writes them)
    and cut to ``limit`` characters: safe to log as one line."""
    text = str(text)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ProblemLog:
    """Logs each subject's problem once, and again only when its message changes."""

    def __init__(self, logger: logging.Logger, enabled: bool = True):
        self.logger = logger
        self.enabled = enabled  # the CLI shows problems itself
        self._messages: dict[Subject, str] = {}

    def report(self, topic: Topic, key: str, message: str, quiet: bool = False) -> None:
        """Log ``message`` about (topic, key) unless exactly it was logged last; ``quiet``: at debug
        level (a normal condition, like a tuning that is not finished)."""
        subject = (topic, key)
        if self._messages.get(subject) != message:
            self._messages[subject] = message
            if self.enabled:
                self.logger.log(logging.DEBUG if quiet else logging.WARNING, "%s", printable(message))

    def clear(self, topic: Topic, key: str = "") -> None:
        """The problem is gone: the next one is logged even if it reads the same."""
        self._messages.pop((topic, key), None)

    def keep_only(self, topic: Topic, keys: set[str]) -> None:
        """Forget the problems of ``topic`` whose subjects no longer exist."""
        for subject in [s for s in self._messages if s[0] is topic and s[1] not in keys]:
            del self._messages[subject]
