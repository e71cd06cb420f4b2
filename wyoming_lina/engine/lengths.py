"""How long an utterance may be: bounds from its text and its voice's speaking rate.

An autoregressive model can end a sentence far too early (EOS after a few frames: the user
hears nothing) or never (babble until a hard stop). Both ends are bounded from what is known
before generating: the characters to speak and the frames this voice spends per character.
EOS is not sampled before the floor; the row ends at the ceiling. Every constant of that rule
lives here (documented in docs/voices.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..defaults import FRAMES_PER_SECOND

# Speaking rate of a voice that has not measured its own: 5 frames per character is 15
# characters per second at 75 frames/s, an ordinary conversational pace (spaces and
# punctuation counted, as spoken_chars counts them).
DEFAULT_FRAMES_PER_CHAR = 5.0
# A measured rate is trusted within these (25 down to 7.5 characters per second, fast to slow
# human speech): a clip with long pauses or a mismatched transcript must not make the bounds absurd.
MIN_FRAMES_PER_CHAR = 3.0
MAX_FRAMES_PER_CHAR = 10.0
FLOOR_RATIO = 0.4  # EOS is masked until 40% of the expected frames are out
CEILING_RATIO = 3.0  # a row ends at 3x the expected frames...
CEILING_MARGIN_FRAMES = 2 * FRAMES_PER_SECOND  # ...plus 2 s (short texts vary most)


def spoken_chars(text: str) -> int:
    """Characters of a normalised text as the rate counts them (whitespace runs count once)."""
    return len(" ".join(text.split()))


def speaking_rate(frames: int, chars: int) -> float | None:
    """Frames per character measured on a clip (or many): None when there is nothing to measure;
    clamped to the plausible range otherwise."""
    if frames <= 0 or chars <= 0:
        return None
    return min(MAX_FRAMES_PER_CHAR, max(MIN_FRAMES_PER_CHAR, frames / chars))


@dataclass(frozen=True)
class FrameBounds:
    """Frames an utterance may have: EOS only from ``min_frames`` on, never past ``max_frames``."""

    min_frames: int
    max_frames: int

    def __post_init__(self):
        if not 0 <= self.min_frames <= self.max_frames or self.max_frames < 1:
            raise ValueError(f"need 0 <= min_frames <= max_frames and max_frames >= 1, got {self}")


def frame_bounds(chars: int, frames_per_char: float | None, max_frames: int) -> FrameBounds:
    """The bounds of one utterance of ``chars`` spoken characters, at most ``max_frames``
    (``--max-sentence-seconds``): floor 40% of expected, ceiling 3x expected + 2 s."""
    rate = DEFAULT_FRAMES_PER_CHAR if frames_per_char is None else frames_per_char
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"frames per character must be positive, got {frames_per_char}")
    expected = max(0, chars) * rate
    ceiling = min(max_frames, int(math.ceil(CEILING_RATIO * expected)) + CEILING_MARGIN_FRAMES)
    floor = min(ceiling, int(FLOOR_RATIO * expected))
    return FrameBounds(min_frames=floor, max_frames=max(1, ceiling))
