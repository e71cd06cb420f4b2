"""``wyoming-lina voice ...``: add, list, show, remove and tune voices.

The server wires this in with ``add_voice_parser(subparsers)`` and ``run(args)``; it also
runs alone: ``python -m wyoming_lina.voices.cli add alice --audio alice.wav --text "..."``.
Both use the same data dir (``--data-dir``, else ``$WYOMING_LINA_DATA_DIR``, else
``~/.local/share/wyoming-lina``) and take the model files from its ``models/`` when none are
given. The model-file options (``--data-dir``, ``--lina-checkpoint``, ``--codec-config``,
``--codec-checkpoint``, ``--tokenizer``, ``--device``, ``--dtype``, ``--voices-file``) are
accepted before or after the sub-command and never override values the server's own parser
already put in ``args`` (their default is "not given").
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from ...data_dir import ensure_writable
from ...errors import LinaError
from . import commands
from .support import MakeTranscriber, data_dir, model_files_from_data_dir
from .tune import TUNE_SETTINGS, resume_command, tune

__all__ = ["add_voice_parser", "build_voice_parser", "main", "resume_command", "run"]

_MODEL_OPTIONS = (
    ("--data-dir", "folder holding voices/ (and the downloaded models)"),
    ("--voices-file", "YAML file listing voices kept elsewhere (name: {audio, text, state, languages, description})"),
    ("--lina-checkpoint", "Lina-Speech checkpoint (.ckpt or .safetensors)"),
    ("--codec-config", "WavTokenizer yaml"),
    ("--codec-checkpoint", "WavTokenizer checkpoint"),
    ("--tokenizer", "Lina text tokenizer (bpe256.json)"),
    ("--device", "cpu or cuda (default: cuda when available)"),
    ("--dtype", "weights dtype on CUDA for tuning: float32 (default) or bfloat16"),
)

_ASR_HELP = "Wyoming speech-to-text server (tcp://HOST:PORT) that transcribes clips and recordings"


def add_voice_parser(
    subparsers, each_command: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.ArgumentParser:
    """Add the ``voice`` command (with its sub-commands) to a main parser's subparsers;
    ``each_command(parser)`` is called for it and each sub-command (options they all take)."""
    parser = subparsers.add_parser(
        "voice",
        help="manage voices: add, list, show, remove, tune",
        description="Manage the voices in the data dir (see docs/voices.md).",
    )
    parser.set_defaults(voice_prog="wyoming-lina voice")
    return build_voice_parser(parser, each_command)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model files")
    for option, help_text in _MODEL_OPTIONS:
        kind = str if option in ("--device", "--dtype") else _path
        group.add_argument(option, type=kind, default=argparse.SUPPRESS, help=help_text)


def _path(value: str) -> Path:
    return Path(value).expanduser()


def build_voice_parser(
    parser: argparse.ArgumentParser, each_command: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.ArgumentParser:
    """Give ``parser`` the voice sub-commands and options (and ``each_command``'s, to it and each)."""
    _add_model_options(parser)
    sub = parser.add_subparsers(dest="voice_command", metavar="COMMAND")
    sub.required = True

    add = sub.add_parser("add", help="add a voice from a clip + transcript, or from a speaker-state file")
    add.add_argument("name", help="voice name: letters, digits, '-', '_', '.' (not first); at most 64")
    add.add_argument("--audio", help="clip of the voice: 3 to 15 s of clear speech (wav, flac, ogg, mp3; any rate)")
    text = add.add_mutually_exclusive_group()
    text.add_argument("--text", help="exactly what is said in the clip (default: from the --asr-uri speech-to-text)")
    text.add_argument("--text-file", help="file holding the transcript")
    add.add_argument("--state", help="an upstream speaker-state file (state.safetensors) to use as the voice")
    add.add_argument("--language", action="append", help="language code, e.g. en (repeat for more; default en)")
    add.add_argument("--description", default="", help="shown in Home Assistant")
    add.add_argument("--overwrite", action="store_true", help="replace a voice of the same name")
    add.add_argument("--asr-uri", default=argparse.SUPPRESS, help=_ASR_HELP)

    lst = sub.add_parser("list", help="list the voices (also broken ones, with the reason)")
    lst.add_argument("--json", action="store_true", help="print JSON")

    show = sub.add_parser("show", help="show everything about one voice")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")

    remove = sub.add_parser("remove", help="delete a voice")
    remove.add_argument("name")

    tune = sub.add_parser(
        "tune",
        help="learn a voice by initial-state tuning from minutes of speech",
        description="Learn a voice from a few minutes of one speaker (initial-state tuning). DIR holds "
        "clip.wav + clip.txt pairs, or an LJSpeech metadata.csv with wavs/. Runs on CUDA when available.",
    )
    tune.add_argument("name")
    source = tune.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="DIR", help="folder of clips with transcripts")
    source.add_argument(
        "--recording",
        action="append",
        metavar="FILE",
        help="a long recording of the speaker (minutes; repeat for more): split at pauses and transcribed "
        "through --asr-uri",
    )
    tune.add_argument("--asr-uri", default=argparse.SUPPRESS, help=_ASR_HELP)
    tune.add_argument("--progress-file", metavar="FILE", help="keep a JSON summary of the progress in FILE")
    for option, dest, kind, help_text in TUNE_SETTINGS:
        tune.add_argument(option, dest=f"tune_{dest}", metavar=dest.upper(), type=kind, default=None, help=help_text)
    how = tune.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true", help="continue an interrupted or finished tuning")
    how.add_argument("--overwrite", action="store_true", help="start over, replacing a tuned state")
    tune.add_argument("--language", action="append", help="language code (default: the voice's, or en)")
    tune.add_argument("--description", default=None, help="shown in Home Assistant")
    tune.add_argument("--no-progress", action="store_true", help="no progress bar")

    for command in (add, lst, show, remove, tune):
        _add_model_options(command)
    if each_command is not None:
        for command in (parser, add, lst, show, remove, tune):
            each_command(command)
    return parser


# --- running -------------------------------------------------------------------------------
def run(args: argparse.Namespace, make_transcriber: MakeTranscriber | None = None) -> int:
    """Run a parsed ``voice`` command; returns the process exit code.

    ``make_transcriber(uri)`` gives ``transcribe(samples, rate, language) -> text`` for the
    speech-to-text server at ``uri`` (the server package wires in its Wyoming client)."""
    model_files_from_data_dir(args)
    try:
        if args.voice_command in ("add", "remove", "tune"):  # they write: fail at once, in one line
            ensure_writable(data_dir(args))
        if args.voice_command == "add":
            return commands.add(args, make_transcriber)
        if args.voice_command == "tune":
            return tune(args, make_transcriber)
        command = {"list": commands.list_voices, "show": commands.show, "remove": commands.remove}
        return command[args.voice_command](args)
    except LinaError as err:
        print(f"error: {commands.with_hint(err, args)}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wyoming_lina.voices.cli", description="Manage wyoming-lina voices."
    )
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    build_voice_parser(parser)
    parser.set_defaults(voice_prog="python -m wyoming_lina.voices.cli")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s: %(message)s")
    return run(args)
