"""Initial-state tuning (IST): learn a speaker as the GLA layers' starting memory.

The model stays frozen. Only a low-rank initial state S0 of the 2n encoder/decoder GLA
layers is learned (``SpeakerState``: S0 = 0.02 * sum_r k_r v_r^T per head), with Adam on
upstream's teacher-forced cross-entropy over the speaker's (transcript, codes) pairs::

    inputs  = [BOS] + (codes + 3)            targets = (codes + 3) + [EOS]
    loss    = cross_entropy(logits(text, inputs, S0), targets, ignore_index=BOS)

Rows of a batch are padded (text with a mask, audio at the end with targets set to the
ignored BOS id), so a padded row's loss equals its loss alone. Batches group clips of similar
length. The order of batches is a pure function of (seed, batch number), and a checkpoint
holds the state, Adam's moments, the step, the best state so far and the RNG, so a resumed
run continues exactly where it stopped.

On CPU the GLA recurrence is a PyTorch loop (autograd through it: slow, and memory grows
with clip length); on CUDA flash-linear-attention's kernels return the gradient of the
initial state. The model code chooses the kernel.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..engine.lengths import speaking_rate
from ..errors import VoiceError
from ..model import BOS, EOS, N_SPECIAL_AUDIO, PAD, SpeakerState
from .dataset import CLIP_CODES_FILE, DatasetReport, TuningExample, prepare_examples, read_dataset
from .files import STATE_FILE, TUNING_DIR, atomic_write_bytes
from .names import name_key, validate_name
from .voice import VoiceInfo

_LOGGER = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 1
# Settings that define the run: a checkpoint can only be resumed with the same values.
STRUCTURAL = (
    "rank",
    "batch_size",
    "grad_accum",
    "seed",
    "val_clips",
    "bucket_batches",
    "max_clip_seconds",
    "min_clip_seconds",
)


@dataclass(frozen=True)
class TuningConfig:
    lr: float = 0.1  # Adam, as in the paper
    rank: int = 1  # low-rank size r of each layer's S0
    batch_size: int = 2  # clips per micro-batch (upstream: 2)
    grad_accum: int = 4  # micro-batches per optimizer step (upstream: 4)
    max_steps: int = 1000  # optimizer steps in all (a resumed run counts from its checkpoint's step)
    max_minutes: float | None = None  # wall-clock budget of this run
    val_clips: int | None = None  # held-out clips; None: about 10% (1 to 8) when there are 5 or more
    eval_every: int = 25  # steps between held-out evaluations (and checkpoints)
    patience: int = 8  # evaluations without improvement before stopping; 0: never stop early
    min_delta: float = 1e-3  # improvement of the held-out loss that counts
    seed: int = 0
    bucket_batches: int = 16  # batches are formed within groups of this many batches sorted by length
    max_clip_seconds: float = 20.0
    min_clip_seconds: float = 0.5

    def __post_init__(self):
        checks = [
            (self.lr > 0 and math.isfinite(self.lr), "lr must be positive"),
            (self.rank >= 1, "rank must be at least 1"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.grad_accum >= 1, "gradient accumulation must be at least 1"),
            (self.max_steps >= 0, "max steps must not be negative"),
            (self.max_minutes is None or self.max_minutes > 0, "max minutes must be positive"),
            (self.val_clips is None or self.val_clips >= 0, "val clips must not be negative"),
            (self.eval_every >= 1, "eval every must be at least 1"),
            (self.patience >= 0, "patience must not be negative"),
            (self.bucket_batches >= 1, "bucket batches must be at least 1"),
            (0 < self.min_clip_seconds < self.max_clip_seconds, "need 0 < min clip seconds < max clip seconds"),
        ]
        for ok, message in checks:
            if not ok:
                raise VoiceError(f"tuning settings: {message}")

    @classmethod
    def from_dict(cls, data: dict) -> TuningConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TuningResult:
    state: SpeakerState  # the best state (lowest held-out loss; the last one without held-out clips)
    step: int  # optimizer steps done in all
    stop_reason: str  # "max_steps", "early_stopping", "time_budget", "interrupted"
    best_val_loss: float | None
    history: list[dict] = field(default_factory=list)  # {"step", "train_loss", "val_loss"?}
    seconds: float = 0.0  # wall time of this run
    clips_seen: int = 0  # training clips processed in this run


# --- data --------------------------------------------------------------------------------
def split_examples(examples: list[TuningExample], val_clips: int | None, seed: int):
    """(train, val): a deterministic held-out split (by clip id and seed)."""
    n = len(examples)
    if val_clips is None:
        val_clips = min(8, max(1, round(0.1 * n))) if n >= 5 else 0
    if val_clips and val_clips >= n:
        raise VoiceError(f"{val_clips} held-out clips leave none of the {n} clips for training")
    order = sorted(range(n), key=lambda i: examples[i].id)
    random.Random(f"split:{seed}").shuffle(order)
    val = sorted(order[:val_clips])
    train = sorted(order[val_clips:])
    return [examples[i] for i in train], [examples[i] for i in val]


class BatchPlan:
    """The i-th micro-batch of training, a pure function of (lengths, seed, i).

    Each epoch shuffles the clips, sorts groups of ``bucket_batches`` batches by length (so a
    batch holds clips of similar length and little padding), cuts them into batches and
    shuffles the batches."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, bucket_batches: int = 16):
        self.lengths = lengths
        self.batch_size = min(batch_size, len(lengths))
        self.seed = seed
        self.bucket = bucket_batches * self.batch_size
        self._epoch: tuple[int, list[list[int]]] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def epoch(self, number: int) -> list[list[int]]:
        if self._epoch is None or self._epoch[0] != number:
            rng = random.Random(f"batches:{self.seed}:{number}")
            order = list(range(len(self.lengths)))
            rng.shuffle(order)
            batches = []
            for start in range(0, len(order), self.bucket):
                group = sorted(order[start : start + self.bucket], key=lambda i: self.lengths[i])
                batches += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
            rng.shuffle(batches)
            self._epoch = (number, batches)
        return self._epoch[1]

    def __getitem__(self, index: int) -> list[int]:
        epoch, i = divmod(index, self.batches_per_epoch)
        return self.epoch(epoch)[i]


def collate(examples: list[TuningExample], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text_ids [B,N], text_mask [B,N], audio_in [B,T+1], targets [B,T+1]).

    audio_in = [BOS] + codes + 3, padded with PAD; targets = codes + 3 + [EOS], padded with
    BOS, which the loss ignores (upstream's ignore_index)."""
    b = len(examples)
    n = max(len(e.text_ids) for e in examples)
    t = max(e.frames for e in examples) + 1
    text = torch.full((b, n), PAD, dtype=torch.long)
    mask = torch.zeros((b, n), dtype=torch.bool)
    audio = torch.full((b, t), PAD, dtype=torch.long)
    targets = torch.full((b, t), BOS, dtype=torch.long)
    for row, e in enumerate(examples):
        text[row, : len(e.text_ids)] = torch.tensor(e.text_ids)
        mask[row, : len(e.text_ids)] = True
        tokens = e.codes.long() + N_SPECIAL_AUDIO
        audio[row, 0] = BOS
        audio[row, 1 : e.frames + 1] = tokens
        targets[row, : e.frames] = tokens
        targets[row, e.frames] = EOS
    return tuple(x.to(device) for x in (text, mask, audio, targets))  # type: ignore[return-value]


def batch_loss(
    model, state: SpeakerState | None, examples: list[TuningExample], reduction: str = "mean"
) -> torch.Tensor:
    """Upstream's teacher-forced cross-entropy of a batch, from the speaker's initial state."""
    text, mask, audio, targets = collate(examples, model.device)
    initial = state.initial_state() if state is not None else None
    logits = model.teacher_forced_logits(text, audio, initial_state=initial, text_mask=mask)
    return F.cross_entropy(logits.transpose(1, 2).float(), targets, ignore_index=BOS, reduction=reduction)


def count_targets(examples: list[TuningExample]) -> int:
    return sum(e.frames + 1 for e in examples)


@torch.no_grad()
def evaluate(model, state: SpeakerState | None, examples: list[TuningExample], batch_size: int = 4) -> float:
    """Mean loss per predicted token over ``examples`` (batched by length)."""
    order = sorted(range(len(examples)), key=lambda i: examples[i].frames)
    total = 0.0
    for start in range(0, len(order), batch_size):
        batch = [examples[i] for i in order[start : start + batch_size]]
        total += float(batch_loss(model, state, batch, reduction="sum"))
    return total / max(1, count_targets(examples))


# --- fingerprints ------------------------------------------------------------------------
def data_fingerprint(train: list[TuningExample], val: list[TuningExample]) -> str:
    digest = hashlib.sha256()
    for part, examples in (("train", train), ("val", val)):
        digest.update(part.encode())
        for e in examples:
            digest.update(e.id.encode() + b"\0" + bytes(str(e.text_ids), "ascii"))
            digest.update(e.codes.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()[:32]


def model_fingerprint(model) -> str:
    digest = hashlib.sha256(repr(model.config).encode())
    digest.update(model.logits_head.weight.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:32]


# --- the loop ----------------------------------------------------------------------------
def tune_state(
    model,
    train: list[TuningExample],
    val: list[TuningExample],
    config: TuningConfig = TuningConfig(),
    *,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> TuningResult:
    """Learn a SpeakerState on ``train``, early-stopping on ``val``; resumable via ``checkpoint_path``.
    ``on_step(step, max_steps)`` is called after every optimizer step (and checkpoint)."""
    from tqdm import tqdm

    if not train:
        raise VoiceError("initial-state tuning needs at least one training clip")
    device = model.device
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(config.seed)
    state = SpeakerState(model.config, rank=config.rank, generator=generator).to(device)
    optimizer = torch.optim.Adam(state.parameters(), lr=config.lr)
    plan = BatchPlan([e.frames for e in train], config.batch_size, config.seed, config.bucket_batches)
    fingerprint = {"data": data_fingerprint(train, val), "model": model_fingerprint(model)}
    step, history = 0, []
    best_val, best_tensors, evals_without_improvement = None, None, 0
    if resume:
        if checkpoint_path is None or not checkpoint_path.is_file():
            raise VoiceError(f"nothing to resume: no checkpoint at {checkpoint_path}")
        ckpt = read_checkpoint(checkpoint_path)
        _check_resumable(ckpt, config, fingerprint, checkpoint_path)
        with torch.no_grad():
            for name, param in state.named_parameters():
                param.copy_(ckpt["state"][name].to(device))
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = config.lr
        step = int(ckpt["step"])
        history = list(ckpt["history"])
        best_val = ckpt["best_val"]
        best_tensors = ckpt["best_state"]
        evals_without_improvement = int(ckpt["evals_without_improvement"])
        torch.set_rng_state(ckpt["rng"])
        _LOGGER.info("resuming initial-state tuning at step %d", step)

    def save_checkpoint() -> None:
        if checkpoint_path is None:
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "state": _tensors(state),
            "optimizer": optimizer.state_dict(),
            "best_state": best_tensors,
            "best_val": best_val,
            "evals_without_improvement": evals_without_improvement,
            "history": history,
            "rng": torch.get_rng_state(),
            "config": asdict(config),
            "fingerprint": fingerprint,
        }
        write_checkpoint(checkpoint_path, payload)

    def run_eval() -> float | None:
        nonlocal best_val, best_tensors, evals_without_improvement
        if not val:
            return None
        loss = evaluate(model, state, val, batch_size=max(config.batch_size, 4))
        if best_val is None or loss < best_val - config.min_delta:
            best_val, best_tensors, evals_without_improvement = loss, _tensors(state), 0
        else:
            evals_without_improvement += 1
        return loss

    if step == 0 and not history and val:
        history.append({"step": 0, "val_loss": run_eval()})
    started = time.monotonic()
    budget = config.max_minutes * 60 if config.max_minutes else None
    stop_reason, clips_seen, postfix = "max_steps", 0, {}
    bar = tqdm(
        total=config.max_steps, initial=min(step, config.max_steps), unit="step", desc="tuning", disable=not progress
    )
    try:
        while True:
            if step >= config.max_steps:
                stop_reason = "max_steps"
                break
            if val and config.patience and evals_without_improvement >= config.patience:
                stop_reason = "early_stopping"
                break
            if budget is not None and time.monotonic() - started >= budget:
                stop_reason = "time_budget"
                break
            optimizer.zero_grad(set_to_none=True)
            train_loss = 0.0
            for micro in range(config.grad_accum):
                batch = [train[i] for i in plan[step * config.grad_accum + micro]]
                loss = batch_loss(model, state, batch)
                (loss / config.grad_accum).backward()
                train_loss += float(loss.detach()) / config.grad_accum
                clips_seen += len(batch)
            if not math.isfinite(train_loss):
                raise VoiceError(f"tuning diverged at step {step + 1} (loss {train_loss}); try a lower --lr")
            optimizer.step()
            step += 1
            record: dict = {"step": step, "train_loss": train_loss}
            postfix["loss"] = f"{train_loss:.3f}"
            if step % config.eval_every == 0 or step == config.max_steps:
                val_loss = run_eval()
                if val_loss is not None:
                    record["val_loss"] = val_loss
                    postfix.update(val=f"{val_loss:.3f}", best=f"{best_val:.3f}")
                history.append(record)
                save_checkpoint()
            else:
                history.append(record)
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if on_step is not None:
                on_step(step, config.max_steps)
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    finally:
        bar.close()
    if stop_reason != "max_steps" or step % config.eval_every:
        save_checkpoint()  # the last completed step (an interrupted step is redone on resume)
    final = SpeakerState(model.config, rank=config.rank).to(device)
    with torch.no_grad():
        source = best_tensors if (val and best_tensors is not None) else _tensors(state)
        for name, param in final.named_parameters():
            param.copy_(source[name].to(device))
    return TuningResult(
        final.requires_grad_(False), step, stop_reason, best_val, history, time.monotonic() - started, clips_seen
    )


def _tensors(state: SpeakerState) -> dict[str, torch.Tensor]:
    return {name: p.detach().float().cpu().clone() for name, p in state.named_parameters()}


def write_checkpoint(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a damaged file
        raise VoiceError(f"cannot read the tuning checkpoint {path}: {err}; start over with --overwrite") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise VoiceError(f"{path} is not a tuning checkpoint of this version; start over with --overwrite")
    return ckpt


def _check_resumable(ckpt: dict, config: TuningConfig, fingerprint: dict, path: Path) -> None:
    saved = ckpt.get("config", {})
    changed = [
        f"{k} ({saved.get(k)!r} -> {getattr(config, k)!r})" for k in STRUCTURAL if saved.get(k) != getattr(config, k)
    ]
    if changed:
        raise VoiceError(f"cannot resume {path}: settings differ: {', '.join(changed)}")
    if ckpt.get("fingerprint", {}).get("model") != fingerprint["model"]:
        raise VoiceError(f"cannot resume {path}: it was made with another model")
    if ckpt.get("fingerprint", {}).get("data") != fingerprint["data"]:
        raise VoiceError(
            f"cannot resume {path}: the training clips changed since it was made; start over with --overwrite"
        )


# --- a voice from a folder of clips ------------------------------------------------------
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
            _tensors(result.state),
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
