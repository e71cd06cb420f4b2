"""Everything known about one voice, for ``voice show`` and the studio (broken voices too)."""

from __future__ import annotations

import soundfile

from ..errors import VoiceError
from .files import TUNING_DIR, inspect_state_tensors, load_tensors
from .scanning import VoiceEntry
from .voice import VoiceInfo


def voice_details(entry: VoiceEntry, info: VoiceInfo) -> dict:
    """A plain dict (JSON-ready): the record, the clip's length and code cache, the state's shape."""
    out: dict = {
        "name": entry.name,
        "kind": entry.kind,
        "installed": info.installed,
        "problem": info.problem or None,
        "languages": list(entry.languages),
        "description": entry.description,
        "created": entry.created,
        "source": entry.source,
        "folder": str(entry.folder) if entry.folder else None,
        "defined_in": str(entry.defined_in) if entry.defined_in else None,
    }
    if entry.has_prompt:
        out["prompt"] = _prompt_details(entry)
    if entry.has_state and entry.state is not None:
        out["state"] = _state_details(entry)
    if entry.folder is not None and (entry.folder / TUNING_DIR).is_dir():
        out["tuning_dir"] = str(entry.folder / TUNING_DIR)
    return out


def _prompt_details(entry: VoiceEntry) -> dict:
    prompt: dict = {"transcript": entry.text, "audio": str(entry.audio) if entry.audio else None}
    if entry.audio is not None and entry.audio.is_file():
        try:
            prompt["seconds"] = round(soundfile.info(str(entry.audio)).duration, 2)
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
            prompt["audio_problem"] = str(err)
    prompt["codes_cached"] = False
    if entry.codes is not None and entry.codes.is_file():
        try:
            tensors, meta = load_tensors(entry.codes)
            prompt["codes_cached"] = True
            prompt["frames"] = int(tensors["codes"].numel())
            prompt["codes_origin"] = meta.get("origin")
        except (VoiceError, KeyError):
            pass
    return prompt


def _state_details(entry: VoiceEntry) -> dict:
    state: dict = {"file": str(entry.state)}
    try:
        tensors, meta = load_tensors(entry.state)
        state["layers"], state["rank"] = inspect_state_tensors(tensors, str(entry.state))
        state.update({k: v for k, v in meta.items() if k != "format"})
    except VoiceError as err:
        state["problem"] = str(err)
    return state
