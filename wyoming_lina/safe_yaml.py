"""YAML that users and other programs write, read without trusting it.

``yaml.safe_load`` builds no objects, but it still expands aliases (a 600-byte file of nested
aliases becomes gigabytes: "billion laughs"), keeps only the last of two equal keys without a
word, reads a file of any size, and recurses once per level of nesting (5,000 ``[`` exhaust
Python's stack). Configuration and voice files need none of that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 32  # levels of nesting; configuration and voice files need three or four


class YamlError(ValueError):
    """A YAML file that is unreadable, too large, or uses what these files never need."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and duplicate keys."""

    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "anchors and aliases (&name, *name) are not allowed here", event.start_mark
            )
        if self.depth >= MAX_DEPTH:
            raise yaml.constructor.ConstructorError(
                None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise yaml.constructor.ConstructorError(None, None, "keys must be plain values", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: Path, *, max_bytes: int, what: str) -> Any:
    """The YAML document in ``path`` (UTF-8, at most ``max_bytes``); ``YamlError`` with one line
    naming the file and the problem otherwise. OSError (missing, unreadable) is the caller's."""
    with open(path, "rb") as file:
        raw = file.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise YamlError(f"{what} {path} is larger than {max_bytes // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise YamlError(f"{what} {path} is not a text file (not UTF-8)") from None
    if "\x00" in text:
        raise YamlError(f"{what} {path} is not a text file")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise YamlError(f"{what} {path} is not valid YAML: {' '.join(str(err).split())}") from None
    except (ValueError, OverflowError, RecursionError) as err:  # e.g. an integer of 5,000 digits
        raise YamlError(f"{what} {path} holds a value that cannot be read: {str(err)[:200]}") from None
