"""``voice tune``: learn a voice from minutes of speech, with progress, and the command that resumes it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ...data_dir import model_paths
from ...errors import VoiceError
from .support import (
    MakeTranscriber,
    data_dir,
    device,
    load_codec,
    load_model,
    load_tokenizer,
    open_store,
    option,
    transcriber,
)

TUNE_SETTINGS = (
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


def tune(args, make_transcriber: MakeTranscriber | None = None) -> int:
    from ..progress import ProgressFile

    progress = ProgressFile(
        Path(args.progress_file) if args.progress_file else None, with_recordings=bool(args.recording)
    )
    try:
        return _run_tuning(args, make_transcriber, progress)
    except KeyboardInterrupt:
        progress.finish("interrupted", "interrupted before tuning began", resumable=False)
        print(
            f"interrupted: run the same command again to continue ({args.name!r} keeps what was done)", file=sys.stderr
        )
        return 130
    except Exception as err:
        progress.finish("failed", "tuning failed", error=str(err))
        raise


def _check_model_files(args):
    """The torch dtype to tune in; VoiceError for missing model files or a bad --dtype."""
    import torch

    missing = [
        o
        for o, a in (
            ("--lina-checkpoint", "lina_checkpoint"),
            ("--codec-checkpoint", "codec_checkpoint"),
            ("--tokenizer", "tokenizer"),
        )
        if not option(args, a)
    ]
    if missing:
        models = model_paths(data_dir(args))["lina_checkpoint"].parent
        raise VoiceError(
            f"voice tune needs the model files and found none in {models} for {', '.join(missing)}: "
            "run `wyoming-lina download` first (the server also fetches them on its first start), "
            "or give those options"
        )
    dtype_name = option(args, "dtype") or "float32"
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype_name not in dtypes:
        raise VoiceError(f"--dtype must be float32 or bfloat16, not {dtype_name!r}")
    dtype = dtypes[dtype_name]
    if dtype != torch.float32 and device(args) == "cpu":
        raise VoiceError("--dtype bfloat16 is for CUDA; on CPU tuning runs in float32")
    if device(args).startswith("cuda"):
        from ...triton_support import check_triton

        check_triton(device(args))  # fla-core's Triton kernels, or the plain recurrence with a warning
    return dtype


def _run_tuning(args, make_transcriber, progress) -> int:
    from ..recordings import checkpoint_file, discard_tuning, pieces_folder, prepare_pieces
    from ..tuning import tune_voice

    dtype = _check_model_files(args)
    transcribe = None
    if args.recording:
        transcribe = transcriber(args, make_transcriber, "--recording needs speech-to-text for its transcripts")
    model, codec, tokenizer = load_model(args, dtype), load_codec(args), load_tokenizer(args)
    settings = {
        dest: getattr(args, f"tune_{dest}")
        for _, dest, _, _ in TUNE_SETTINGS
        if getattr(args, f"tune_{dest}") is not None
    }
    store = open_store(args, codec=codec, model=model, tokenizer=tokenizer)
    data = args.data
    created = args.name not in store
    try:
        if args.recording:
            data = pieces_folder(store, args.name)
            report = prepare_pieces([Path(r) for r in args.recording], data, transcribe, on_progress=progress.phase)
            print(f"recordings: {report.summary()}", file=sys.stderr)
        source = ", ".join(args.recording) if args.recording else args.data
        dtype_name = option(args, "dtype") or "float32"
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
    _print_outcome(outcome)
    result = outcome.result
    if outcome.info is None:
        progress.finish("interrupted", f"interrupted at step {result.step}", resumable=True)
        print(f"interrupted: continue with: {resume_command(args)}")
        return 130
    progress.finish("done", f"voice {outcome.info.name!r} is ready")
    print(f"voice {outcome.info.name!r} is ready ({outcome.info.kind}); checkpoint kept in {outcome.checkpoint.parent}")
    return 0


def _print_outcome(outcome) -> None:
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


def resume_command(args) -> str:
    """The command that continues this tuning: the same voice, data, settings and files (a
    checkpoint refuses to resume with other settings), with ``--resume``."""
    given_files = option(args, "given_model_files") or []
    words = [*(option(args, "voice_prog") or "wyoming-lina voice").split(), "tune", args.name]
    if option(args, "recording"):
        for recording in args.recording:
            words += ["--recording", str(recording)]
    else:
        words += ["--data", str(args.data)]
    for flag, dest, _, _ in TUNE_SETTINGS:
        value = getattr(args, f"tune_{dest}", None)
        if value is not None:
            words += [flag, str(value)]
    for language in option(args, "language") or ():
        words += ["--language", language]
    if option(args, "description") is not None:
        words += ["--description", args.description]
    words += ["--data-dir", str(data_dir(args))]
    for name in ("voices_file", *given_files, "codec_config", "device", "dtype"):
        if option(args, name) and (name != "codec_config" or "codec_checkpoint" in given_files):
            words += ["--" + name.replace("_", "-"), str(option(args, name))]
    return shlex.join([*words, "--resume"])
