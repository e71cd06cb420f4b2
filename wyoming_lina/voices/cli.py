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
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Callable

from ..data_dir import default_data_dir, ensure_writable, model_paths
from ..errors import LinaError, VoiceError

_LOGGER = logging.getLogger(__name__)
MakeTranscriber = Callable[[str], Callable]

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
_TUNE_SETTINGS = (
    # (option, TuningConfig field, type, help)
    ("--max-steps", "max_steps", int, "optimizer steps in all (default 1000)"),
    ("--max-minutes", "max_minutes", float, "stop after this many minutes (then --resume continues)"),
    ("--lr", "lr", float, "Adam learning rate (default 0.1, as in the paper)"),
    ("--rank", "rank", int, "rank of each layer's initial state (default 1)"),
    ("--batch-size", "batch_size", int, "clips per micro-batch (default 2)"),
    ("--grad-accum", "grad_accum", int, "micro-batches per step (default 4)"),
    ("--val-clips", "val_clips", int, "held-out clips for early stopping (default: about 10%%, 1 to 8)"),
    ("--eval-every", "eval_every", int, "steps between held-out evaluations and checkpoints (default 25)"),
    ("--patience", "patience", int, "evaluations without improvement before stopping (default 8; 0: never)"),
    ("--seed", "seed", int, "random seed (default 0)"),
    ("--max-clip-seconds", "max_clip_seconds", float, "skip clips longer than this (default 20)"),
)


def add_voice_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``voice`` command (with its sub-commands) to a main parser's subparsers."""
    parser = subparsers.add_parser(
        "voice",
        help="manage voices: add, list, show, remove, tune",
        description="Manage the voices in the data dir (see docs/voices.md).",
    )
    parser.set_defaults(voice_prog="wyoming-lina voice")
    return build_voice_parser(parser)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model files")
    for option, help_text in _MODEL_OPTIONS:
        kind = str if option in ("--device", "--dtype") else _path
        group.add_argument(option, type=kind, default=argparse.SUPPRESS, help=help_text)


def _path(value: str) -> Path:
    return Path(value).expanduser()


def build_voice_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` the voice sub-commands and options."""
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
    for option, dest, kind, help_text in _TUNE_SETTINGS:
        tune.add_argument(option, dest=f"tune_{dest}", metavar=dest.upper(), type=kind, default=None, help=help_text)
    how = tune.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true", help="continue an interrupted or finished tuning")
    how.add_argument("--overwrite", action="store_true", help="start over, replacing a tuned state")
    tune.add_argument("--language", action="append", help="language code (default: the voice's, or en)")
    tune.add_argument("--description", default=None, help="shown in Home Assistant")
    tune.add_argument("--no-progress", action="store_true", help="no progress bar")

    for command in (add, lst, show, remove, tune):
        _add_model_options(command)
    return parser


# --- running -------------------------------------------------------------------------------
def run(args: argparse.Namespace, make_transcriber: MakeTranscriber | None = None) -> int:
    """Run a parsed ``voice`` command; returns the process exit code.

    ``make_transcriber(uri)`` gives ``transcribe(samples, rate, language) -> text`` for the
    speech-to-text server at ``uri`` (the server package wires in its Wyoming client)."""
    commands = {"add": _add, "list": _list, "show": _show, "remove": _remove, "tune": _tune}
    _model_files_from_data_dir(args)
    try:
        if args.voice_command in ("add", "remove", "tune"):  # they write: fail at once, in one line
            ensure_writable(_data_dir(args))
        if args.voice_command in ("add", "tune"):
            return commands[args.voice_command](args, make_transcriber)
        return commands[args.voice_command](args)
    except LinaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _option(args, name: str):
    return getattr(args, name, None)


def _data_dir(args) -> Path:
    return Path(_option(args, "data_dir") or default_data_dir()).expanduser()


def _model_files_from_data_dir(args) -> None:
    """Model files not given default to the converted ones in the data dir, as for the server.
    Remembers which were given (the tuning resume hint repeats only those)."""
    args.given_model_files = [o for o in ("lina_checkpoint", "codec_checkpoint", "tokenizer") if _option(args, o)]
    for option, path in model_paths(_data_dir(args)).items():
        if not _option(args, option) and path.is_file():
            setattr(args, option, path)


def _device(args) -> str:
    import torch

    device = _option(args, "device")
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_codec(args):
    if not _option(args, "codec_checkpoint"):
        return None
    from ..codec import load_codec

    return load_codec(_option(args, "codec_config"), args.codec_checkpoint, device=_device(args))


def _load_model(args, dtype=None):
    if not _option(args, "lina_checkpoint"):
        return None
    from ..model import load_lina

    return load_lina(args.lina_checkpoint, device=_device(args), dtype=dtype)


def _load_tokenizer(args):
    if not _option(args, "tokenizer"):
        return None
    from ..text import LinaTokenizer

    return LinaTokenizer(args.tokenizer)


def _store(args, codec=None, model=None, tokenizer=None):
    from .store import VoiceStore

    return VoiceStore(
        _data_dir(args),
        codec=codec,
        model=model,
        config_path=_option(args, "voices_file"),
        tokenizer=tokenizer,
        log_problems=False,  # list and show print them
    )


def _transcriber(args, make_transcriber: MakeTranscriber | None, why: str):
    """``transcribe(samples, rate) -> text`` through --asr-uri (in the voice's language)."""
    uri = _option(args, "asr_uri")
    if not uri:
        raise VoiceError(f"{why}: give --asr-uri tcp://HOST:PORT (your Wyoming speech-to-text server)")
    if make_transcriber is None:
        raise VoiceError("speech-to-text needs the wyoming-lina command: wyoming-lina voice ... --asr-uri URI")
    transcribe = make_transcriber(uri)
    language = (args.language or [None])[0]
    return lambda samples, rate: transcribe(samples, rate, language)


def _transcribe_clip(path: str, transcribe) -> str:
    from ..codec.audio import CODEC_RATE
    from .clips import PROMPT_LIMITS, prepare_clip

    clip = prepare_clip(path, PROMPT_LIMITS)
    text = transcribe(clip.samples, CODEC_RATE)
    if not any(ch.isalpha() for ch in text):
        raise VoiceError(f"speech-to-text heard no words in {Path(path).name}; give the transcript with --text")
    print(f"transcript (from speech-to-text): {text}", file=sys.stderr)
    return text


def _add(args, make_transcriber: MakeTranscriber | None = None) -> int:
    text = args.text
    if args.text_file:
        try:
            text = Path(args.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise VoiceError(f"cannot read the transcript {args.text_file}: {err}") from err
    if args.audio is None and args.state is None:
        raise VoiceError("give a clip (--audio CLIP --text TRANSCRIPT) or a speaker state (--state FILE)")
    if args.audio is not None and text is None:
        from .names import validate_name

        validate_name(args.name)  # before asking the speech-to-text server
        text = _transcribe_clip(args.audio, _transcriber(args, make_transcriber, "the clip needs its transcript (--text)"))
    store = _store(
        args,
        codec=_load_codec(args) if args.audio else None,
        model=_load_model(args) if args.state else None,
        tokenizer=_load_tokenizer(args),
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


def _list(args) -> int:
    infos = _store(args).list()
    if args.json:
        print(json.dumps([_info_dict(i) for i in infos], indent=2))
        return 0
    if not infos:
        print(f"no voices in {_data_dir(args) / 'voices'}")
        return 0
    rows = [("NAME", "KIND", "LANGUAGES", "DESCRIPTION", "STATUS")]
    for i in infos:
        status = "ok" if i.installed else f"not usable: {i.problem}"
        rows.append((i.name, i.kind, ",".join(i.languages), i.description, status))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4])
    return 0


def _info_dict(info) -> dict:
    return {
        "name": info.name,
        "kind": info.kind,
        "languages": list(info.languages),
        "installed": info.installed,
        "description": info.description,
        "problem": info.problem or None,
    }


def _show(args) -> int:
    details = _store(args).show(args.name)
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


def _remove(args) -> int:
    info = _store(args).remove(args.name)
    print(f"removed voice {info.name!r}")
    return 0


def _tune(args, make_transcriber: MakeTranscriber | None = None) -> int:
    from .progress import ProgressFile

    progress = ProgressFile(
        Path(args.progress_file) if args.progress_file else None, with_recordings=bool(args.recording)
    )
    try:
        return _run_tuning(args, make_transcriber, progress)
    except KeyboardInterrupt:
        progress.finish("interrupted", "interrupted before tuning began", resumable=False)
        print(f"interrupted: run the same command again to continue ({args.name!r} keeps what was done)", file=sys.stderr)
        return 130
    except Exception as err:
        progress.finish("failed", "tuning failed", error=str(err))
        raise


def _run_tuning(args, make_transcriber, progress) -> int:
    import torch

    from .recordings import checkpoint_file, discard_tuning, pieces_folder, prepare_pieces
    from .tuning import tune_voice

    missing = [
        o
        for o, a in (
            ("--lina-checkpoint", "lina_checkpoint"),
            ("--codec-checkpoint", "codec_checkpoint"),
            ("--tokenizer", "tokenizer"),
        )
        if not _option(args, a)
    ]
    if missing:
        models = model_paths(_data_dir(args))["lina_checkpoint"].parent
        raise VoiceError(
            f"voice tune needs the model files and found none in {models} for {', '.join(missing)}: "
            "run `wyoming-lina download` first (the server also fetches them on its first start), "
            "or give those options"
        )
    dtype_name = _option(args, "dtype") or "float32"
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype_name not in dtypes:
        raise VoiceError(f"--dtype must be float32 or bfloat16, not {dtype_name!r}")
    dtype = dtypes[dtype_name]
    if dtype != torch.float32 and _device(args) == "cpu":
        raise VoiceError("--dtype bfloat16 is for CUDA; on CPU tuning runs in float32")
    if _device(args).startswith("cuda"):
        from ..triton_support import check_triton

        check_triton(_device(args))  # fla-core's Triton kernels, or the plain recurrence with a warning
    transcribe = None
    if args.recording:
        transcribe = _transcriber(args, make_transcriber, "--recording needs speech-to-text for its transcripts")
    model, codec, tokenizer = _load_model(args, dtype), _load_codec(args), _load_tokenizer(args)
    settings = {
        dest: getattr(args, f"tune_{dest}")
        for _, dest, _, _ in _TUNE_SETTINGS
        if getattr(args, f"tune_{dest}") is not None
    }
    store = _store(args, codec=codec, model=model, tokenizer=tokenizer)
    data = args.data
    created = args.name not in store
    try:
        if args.recording:
            data = pieces_folder(store, args.name)
            report = prepare_pieces([Path(r) for r in args.recording], data, transcribe, on_progress=progress.phase)
            print(f"recordings: {report.summary()}", file=sys.stderr)
        source = ", ".join(args.recording) if args.recording else args.data
        print(f"tuning voice {args.name!r} on {source} ({model.device}, {dtype_name})", file=sys.stderr)
        progress.phase("encoding", 0.0, "preparing the training clips")
        outcome = tune_voice(
            store,
            args.name,
            data,
            model=model,
            codec=codec,
            tokenizer=tokenizer,
            settings=settings,
            resume=args.resume,
            overwrite=args.overwrite,
            languages=tuple(args.language) if args.language else None,
            description=args.description,
            progress=not args.no_progress,
            on_step=lambda step, most: progress.step(step, most, checkpoint_file(store, args.name).is_file()),
        )
    except Exception:
        # a voice folder this run made holds nothing to resume from: it goes (no half voice)
        if created and args.name in store and not checkpoint_file(store, args.name).is_file():
            discard_tuning(store, args.name, remove_voice=True)
        raise
    for note in outcome.notes[:10]:
        print(f"note: left out {note}", file=sys.stderr)
    if len(outcome.notes) > 10:
        print(f"note: ... and {len(outcome.notes) - 10} more files left out", file=sys.stderr)
    for skip in outcome.report.examples_of_skips:
        print(f"note: skipped {skip}", file=sys.stderr)
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    result = outcome.result
    print(f"data: {outcome.report.summary()}")
    clips_per_s = result.clips_seen / max(result.seconds, 1e-9)
    line = f"{result.step} steps ({result.stop_reason}) in {result.seconds / 60:.1f} min, {clips_per_s:.1f} clips/s"
    if result.best_val_loss is not None:
        first = next((h["val_loss"] for h in result.history if "val_loss" in h), None)
        line += f"; held-out loss {first:.3f} -> best {result.best_val_loss:.3f}" if first is not None else ""
    print(line)
    if outcome.info is None:
        progress.finish("interrupted", f"interrupted at step {result.step}", resumable=True)
        print(f"interrupted: continue with: {resume_command(args)}")
        return 130
    progress.finish("done", f"voice {outcome.info.name!r} is ready")
    print(f"voice {outcome.info.name!r} is ready ({outcome.info.kind}); checkpoint kept in {outcome.checkpoint.parent}")
    return 0


def resume_command(args) -> str:
    """The command that continues this tuning: the same voice, data, settings and files (a
    checkpoint refuses to resume with other settings), with ``--resume``."""
    given_files = _option(args, "given_model_files") or []
    words = [*(_option(args, "voice_prog") or "wyoming-lina voice").split(), "tune", args.name]
    if _option(args, "recording"):
        for recording in args.recording:
            words += ["--recording", str(recording)]
    else:
        words += ["--data", str(args.data)]
    for option, dest, _, _ in _TUNE_SETTINGS:
        value = getattr(args, f"tune_{dest}", None)
        if value is not None:
            words += [option, str(value)]
    for language in _option(args, "language") or ():
        words += ["--language", language]
    if _option(args, "description") is not None:
        words += ["--description", args.description]
    words += ["--data-dir", str(_data_dir(args))]
    for option in ("voices_file", *given_files, "codec_config", "device", "dtype"):
        if _option(args, option) and (option != "codec_config" or "codec_checkpoint" in given_files):
            words += ["--" + option.replace("_", "-"), str(_option(args, option))]
    return shlex.join([*words, "--resume"])


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


if __name__ == "__main__":
    sys.exit(main())
