"""Voices: cloned from a clip (prompt), learned by initial-state tuning (state), or both.

* :class:`VoiceStore` keeps them in ``<data_dir>/voices/<name>/`` (and reads a YAML list of
  voices kept elsewhere), by case-insensitive name; ``list()`` rescans the disk each call. It is
  a facade over the catalog (scanning, loading, caches), the storage of folders, the prompt
  encoder and the bounded reading of voice files (docs/voices.md, "The package").
* :func:`ensure_default_voice` makes the built-in ``default`` voice once, from a fixed seed.
* :mod:`.tuning` learns a voice's initial state from minutes of speech; :mod:`.cli` is the
  ``wyoming-lina voice ...`` command. See docs/voices.md.
"""

from .default import DEFAULT_VOICE, DefaultVoiceRecipe, ensure_default_voice
from .names import name_problem, validate_name
from .store import AddResult, VoiceStore
from .voice import Voice, VoiceInfo

__all__ = [
    "DEFAULT_VOICE",
    "AddResult",
    "DefaultVoiceRecipe",
    "Voice",
    "VoiceInfo",
    "VoiceStore",
    "ensure_default_voice",
    "name_problem",
    "validate_name",
]
