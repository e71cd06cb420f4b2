"""YAML read as plain data, within bounds: a voice file must never stall or flood the server.

The server reads ``voice.yaml`` files and the voices file on every rescan (Home Assistant's
``describe``), so a hostile or broken file must cost little. YAML's anchors and aliases let
600 bytes expand into gigabytes (the "billion laughs" shape), and deep nesting exhausts the
parser's recursion; neither has any use in a voice file. So, before anything is built:

* the file is read only up to its size cap (``VOICE_FILE_MAX_BYTES`` for ``voice.yaml`` and
  ``settings.yaml``, ``VOICES_FILE_MAX_BYTES`` for a voices file listing many voices);
* its events are checked: no anchor (``&``) or alias (``*``), no nesting deeper than
  ``MAX_DEPTH`` levels;
* only then is it loaded with the safe loader (libyaml's when installed).

What the values may be is checked by ``metadata.py``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import VoiceError

VOICE_FILE_MAX_BYTES = 32 * 1024  # a voice.yaml the tools write is under 1 KiB
VOICES_FILE_MAX_BYTES = 1024 * 1024  # a voices file: room for about a thousand voices with transcripts
MAX_DEPTH = 8  # voice files nest two levels (a voice's settings, a list of languages)

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPENING = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSING = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 else f"{n} bytes"


def load_yaml(path: Path, max_bytes: int = VOICE_FILE_MAX_BYTES):
    """The data in the YAML file ``path``; VoiceError saying what is wrong otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise VoiceError(f"cannot read {path}: {err}") from err
    if len(raw) > max_bytes:
        raise VoiceError(f"{path} is larger than {_size(max_bytes)}, the most such a file may be")
    try:
        _check_events(text, path)
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise VoiceError(f"{path} is not valid YAML{where}: {problem}") from err
    except (ValueError, OverflowError, RecursionError) as err:  # e.g. an integer of 5,000 digits
        raise VoiceError(f"{path} holds a value that cannot be read: {str(err)[:200]}") from err


def _check_events(text: str, path: Path) -> None:
    """Refuse anchors, aliases and deep nesting, from the parser's events (nothing built yet)."""
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            line = event.start_mark.line + 1 if event.start_mark is not None else "?"
            raise VoiceError(f"{path} uses a YAML anchor or alias (& or *, line {line}); voice files may not")
        if isinstance(event, _OPENING):
            depth += 1
            if depth > MAX_DEPTH:
                raise VoiceError(f"{path} nests more than {MAX_DEPTH} levels deep; voice files need two")
        elif isinstance(event, _CLOSING):
            depth -= 1


def read_yaml_mapping(path: Path, max_bytes: int = VOICE_FILE_MAX_BYTES) -> dict:
    """A YAML file that must hold a mapping (an empty file is an empty one)."""
    data = load_yaml(path, max_bytes)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VoiceError(f"{path} must hold a mapping of settings, not a {type(data).__name__}")
    return data
