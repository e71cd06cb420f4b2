"""Markdown that language models put in Home Assistant answers, and how it is unwrapped.

Assist answers from LLMs arrive as markdown: ``**bold**``, ``- item`` lists, ``1. step``
lists, ``# headings``, links. None of the markers should be spoken, and the line
structure matters for sentence splitting (a list item is its own sentence even without a
full stop). The same line-marker pattern is used by the splitter (on raw, streamed text)
and by the normaliser (on whatever text it is given), so both agree on what a marker is.
"""

from __future__ import annotations

import re

# Characters that start a list item when followed by a space: -, *, +, bullets, dashes
# used as bullets, and '>' for block quotes.
BULLETS = "-*+•◦‣▪–—>"
# A marker at the start of a line: bullet, "1." / "1)" numbering, or a heading's #s.
LINE_MARKER_RE = re.compile(rf"[ \t]*(?:[{re.escape(BULLETS)}]|[0-9]{{1,3}}[.)]|#{{1,6}})[ \t]+")
# A line start that could still grow into a marker ("", "  ", "1", "12.", "#", "- ").
PARTIAL_LINE_MARKER_RE = re.compile(
    rf"[ \t]*(?:(?:[{re.escape(BULLETS)}]|[0-9]{{1,3}}[.)]|#{{1,6}})[ \t]*|[0-9]{{1,3}})?"
)

_LINE_MARKERS_RE = re.compile(rf"^{LINE_MARKER_RE.pattern}", re.MULTILINE)
_RULE_RE = re.compile(r"^[ \t]*([-*_=])(?:[ \t]*\1){2,}[ \t]*$", re.MULTILINE)
_FENCE_RE = re.compile(r"^[ \t]*(?:```|~~~)[^\n]*$", re.MULTILINE)
_IMAGE_RE = re.compile(r"!\[([^\[\]\n]*)\]\([^()\n]*\)")
_LINK_RE = re.compile(r"\[([^\[\]\n]+)\]\([^()\n]*\)")
_STRONG_RE = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EMPHASIS_RE = re.compile(r"(?<![\w*])([*_])(?=[^\s*_])(.+?)(?<=[^\s*_])\1(?![\w*])")
_STRIKE_RE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][^<>\n]*>")
_TABLE_SEPARATOR_RE = re.compile(r"^[ \t]*\|?(?:[ \t]*:?-{3,}:?[ \t]*\|)+[ \t]*:?-*:?[ \t]*$", re.MULTILINE)


def strip_markdown(text: str) -> str:
    """Remove markdown markers, keeping the words they wrap (lines are kept)."""
    text = _FENCE_RE.sub("", text)
    text = _HTML_TAG_RE.sub(" ", text)
    text = _TABLE_SEPARATOR_RE.sub("", text)
    text = _RULE_RE.sub("", text)
    text = _IMAGE_RE.sub(r"\1", text)
    text = _LINK_RE.sub(r"\1", text)
    text = text.replace("`", "")
    text = _LINE_MARKERS_RE.sub("", text)
    text = _STRONG_RE.sub(r"\2", text)
    text = _EMPHASIS_RE.sub(r"\2", text)
    return _STRIKE_RE.sub(r"\1", text)
