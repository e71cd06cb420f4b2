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

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import VoiceError
from ..model import BOS, SpeakerState
from .batches import BatchPlan, collate
from .checkpoints import (
    CHECKPOINT_FORMAT,
    check_resumable,
    data_fingerprint,
    model_fingerprint,
    read_checkpoint,
    write_checkpoint,
)
from .dataset import TuningExample

_LOGGER = logging.getLogger(__name__)


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
        check_resumable(ckpt, config, fingerprint, checkpoint_path)
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
            "state": state_tensors(state),
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
            best_val, best_tensors, evals_without_improvement = loss, state_tensors(state), 0
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
        source = best_tensors if (val and best_tensors is not None) else state_tensors(state)
        for name, param in final.named_parameters():
            param.copy_(source[name].to(device))
    return TuningResult(
        final.requires_grad_(False), step, stop_reason, best_val, history, time.monotonic() - started, clips_seen
    )


def state_tensors(state: SpeakerState) -> dict[str, torch.Tensor]:
    return {name: p.detach().float().cpu().clone() for name, p in state.named_parameters()}
