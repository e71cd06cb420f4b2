"""``voice tune``'s work: a voice's initial state learned from a folder of clips, and stored.

Reads and encodes the clips (``dataset.py``), checks what a resumed run may change
(``checkpoints.py``), runs the training loop (``training.py``) and stores the best state
through the store (``write_state_voice``), with the speaker's measured speaking rate.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..engine.lengths import speaking_rate
from ..errors import VoiceError
from .batches import split_examples
from .checkpoints import STRUCTURAL, read_checkpoint
from .dataset import CLIP_CODES_FILE, DatasetReport, prepare_examples, read_dataset
from .files import STATE_FILE, TUNING_DIR
from .names import name_key, validate_name
from .training import TuningConfig, TuningResult, state_tensors, tune_state
from .voice import VoiceInfo

_LOGGER = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TuneOutcome:
    info: VoiceInfo | None  # the stored voice, or None when tuning was interrupted
    result: TuningResult
    report: DatasetReport
    notes: list[str]  # files of the data folder that were left out
    warnings: list[str]
    checkpoint: Path


def tune_voice(
    store,
    name: str,
    data_dir: str | Path,
    *,
    model,
    codec,
    tokenizer,
    settings: dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
    languages: tuple[str, ...] | None = None,
    description: str | None = None,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> TuneOutcome:
    """Tune voice ``name`` on the clips in ``data_dir`` and store its state.

    ``settings`` holds the TuningConfig fields given explicitly. On ``resume`` the run's
    defining settings come from the checkpoint, and only the budget (max_steps, max_minutes,
    patience, lr, eval_every, min_delta) may be changed. A voice that already has a prompt keeps
    it (kind ``prompt+state``)."""
    validate_name(name)
    settings = dict(settings or {})
    if resume and overwrite:
        raise VoiceError("--resume continues a tuning, --overwrite starts it over: choose one")
    existing = {name_key(i.name): i for i in store.list()}.get(name_key(name))
    folder = store.folder_for_new_state(name)
    checkpoint = folder / TUNING_DIR / CHECKPOINT_FILE
    try:
        if (
            existing is not None
            and "state" in existing.kind
            and (folder / STATE_FILE).is_file()
            and not (resume or overwrite)
        ):
            raise VoiceError(
                f"voice {existing.name!r} already has a tuned state: --resume to continue, --overwrite to start over"
            )
        if checkpoint.is_file() and not (resume or overwrite):
            raise VoiceError(
                f"an unfinished tuning of {name!r} exists: --resume to continue it, --overwrite to start over"
            )
        if overwrite:
            checkpoint.unlink(missing_ok=True)
        if resume:
            saved = read_checkpoint(checkpoint) if checkpoint.is_file() else None
            if saved is None:
                raise VoiceError(f"nothing to resume: no tuning checkpoint in {checkpoint.parent}")
            clash = [k for k in STRUCTURAL if k in settings and settings[k] != saved["config"].get(k)]
            if clash:
                raise VoiceError(f"cannot change {', '.join(clash)} when resuming; start over with --overwrite")
            config = TuningConfig.from_dict({**saved["config"], **settings})
        else:
            config = TuningConfig.from_dict(settings)
        items, notes = read_dataset(data_dir)
        examples, report = prepare_examples(
            items,
            codec,
            tokenizer,
            folder / TUNING_DIR / CLIP_CODES_FILE,
            max_clip_seconds=config.max_clip_seconds,
            min_clip_seconds=config.min_clip_seconds,
            max_text_tokens=model.config.max_text_len,
            n_codes=model.config.n_codes,
            progress=progress,
        )
        if not examples:
            raise VoiceError(f"none of the {report.found} clips can be used: {report.summary()}")
        warnings = []
        if report.seconds < 60:
            warnings.append(
                f"only {report.seconds:.0f} s of speech: initial-state tuning works best with 3 to 15 minutes"
            )
        train, val = split_examples(examples, config.val_clips, config.seed)
        if not val:
            warnings.append("fewer than 5 clips: no held-out clips, so no early stopping (the last state is kept)")
        _LOGGER.info("tuning %r on %s (%d train, %d held out)", name, report.summary(), len(train), len(val))
        result = tune_state(
            model, train, val, config, checkpoint_path=checkpoint, resume=resume, progress=progress, on_step=on_step
        )
        if result.stop_reason == "interrupted":
            return TuneOutcome(None, result, report, notes, warnings, checkpoint)
        best = f", held-out loss {result.best_val_loss:.3f}" if result.best_val_loss is not None else ""
        source = (
            f"initial-state tuning on {Path(data_dir).name}: {len(examples)} clips ({report.seconds / 60:.1f} min), "
            f"{result.step} steps ({result.stop_reason}){best}"
        )
        metadata = {"format": "lina-speaker-state", "rank": str(config.rank), "steps": str(result.step)}
        rate = speaking_rate(sum(e.frames for e in examples), sum(e.chars for e in examples))
        info = store.write_state_voice(
            name,
            state_tensors(result.state),
            languages=languages,
            description=description,
            source=source,
            metadata=metadata,
            frames_per_char=rate,
        )
        return TuneOutcome(info, result, report, notes, warnings, checkpoint)
    except BaseException:
        # a folder made for this run that holds nothing to resume from is not left behind
        if existing is None and not (checkpoint.is_file() or (folder / STATE_FILE).is_file()):
            shutil.rmtree(folder, ignore_errors=True)
        raise
