"""``voice add``, ``list``, ``show`` and ``remove``: the store's answers, printed for a person.

The store's errors say what is wrong; this module adds how to fix it with the command's own
options (``--overwrite``, ``voice add ...``, ``voice tune ... --resume``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ...errors import LinaError, UnknownVoiceError, VoiceError
from ..problems import printable
from .support import MakeTranscriber, data_dir, load_codec, load_model, load_tokenizer, open_store, option, transcriber


def prog(args) -> str:
    return option(args, "voice_prog") or "wyoming-lina voice"


def with_hint(err: LinaError, args) -> str:
    """The error's message, and how to fix it with this command's options where that helps."""
    from ..store import VoiceExistsError

    if isinstance(err, VoiceExistsError):
        return f"{err}; remove it first or use --overwrite"
    return str(err)


def _unfinished_hint(args, name: str) -> str:
    return f" (continue with: {prog(args)} tune {name} --resume ...)"


def _transcribe_clip(path: str, transcribe) -> str:
    from ...codec.audio import CODEC_RATE
    from ..clips import PROMPT_LIMITS, prepare_clip

    clip = prepare_clip(path, PROMPT_LIMITS)
    text = transcribe(clip.samples, CODEC_RATE)
    if not any(ch.isalpha() for ch in text):
        raise VoiceError(f"speech-to-text heard no words in {Path(path).name}; give the transcript with --text")
    print(f"transcript (from speech-to-text): {text}", file=sys.stderr)
    return text


def add(args, make_transcriber: MakeTranscriber | None = None) -> int:
    text = args.text
    if args.text_file:
        try:
            text = Path(args.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise VoiceError(f"cannot read the transcript {args.text_file}: {err}") from err
    if args.audio is None and args.state is None:
        raise VoiceError("give a clip (--audio CLIP --text TRANSCRIPT) or a speaker state (--state FILE)")
    if args.audio is None and text:
        raise VoiceError("--text is the transcript of a clip; give the clip with --audio too")
    if args.audio is not None and text is None:
        from ..names import validate_name

        validate_name(args.name)  # before asking the speech-to-text server
        text = _transcribe_clip(
            args.audio, transcriber(args, make_transcriber, "the clip needs its transcript (--text)")
        )
    store = open_store(
        args,
        codec=load_codec(args) if args.audio else None,
        model=load_model(args) if args.state else None,
        tokenizer=load_tokenizer(args),
    )
    result = store.add(
        args.name,
        audio=args.audio,
        text=text,
        state=args.state,
        languages=args.language,
        description=args.description,
        overwrite=args.overwrite,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    info = result.info
    print(f"added voice {info.name!r} ({info.kind}, {', '.join(info.languages)}) in {result.folder}")
    if args.audio and store.codec is None:
        print("its clip will be encoded when the server loads it (no --codec-checkpoint given)")
    return 0


def list_voices(args) -> int:
    store = open_store(args)
    infos = store.list()
    if args.json:
        print(json.dumps([_info_dict(i) for i in infos], indent=2))
        return 0
    if not infos:
        print(f"no voices in {data_dir(args) / 'voices'}")
        return 0
    rows = [("NAME", "KIND", "LANGUAGES", "DESCRIPTION", "STATUS")]
    for i in infos:
        status = "ok" if i.installed else f"not usable: {printable(i.problem)}{_hint_for_problem(store, args, i.name)}"
        rows.append((i.name, i.kind, ",".join(i.languages), printable(i.description, 80), status))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4])
    return 0


def _hint_for_problem(store, args, name: str) -> str:
    try:
        return _unfinished_hint(args, name) if store.entry(name).unfinished else ""
    except LinaError:
        return ""


def _info_dict(info) -> dict:
    return {
        "name": info.name,
        "kind": info.kind,
        "languages": list(info.languages),
        "installed": info.installed,
        "description": info.description,
        "problem": info.problem or None,
    }


def show(args) -> int:
    store = open_store(args)
    details = _named(store, args, store.show)
    if details["problem"] and _hint_for_problem(store, args, details["name"]):
        details["problem"] += _hint_for_problem(store, args, details["name"])
    if args.json:
        print(json.dumps(details, indent=2))
        return 0
    for key, value in details.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        elif value not in (None, "", []):
            print(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    return 0


def remove(args) -> int:
    store = open_store(args)
    info = _named(store, args, store.remove)
    print(f"removed voice {info.name!r}")
    return 0


def _named(store, args, action):
    """``action(args.name)``; an unknown name in an empty store says how to add a voice."""
    try:
        return action(args.name)
    except UnknownVoiceError as err:
        if any(i.installed for i in store.list()):
            raise
        raise UnknownVoiceError(f"{err} (add one with: {prog(args)} add NAME --audio CLIP --text TRANSCRIPT)") from err
