"""The training clips as batches: a held-out split, the order of micro-batches, padded tensors.

Every choice is a pure function of the clips and the seed, so a resumed tuning sees exactly
the batches it would have seen without the interruption.
"""

from __future__ import annotations

import random

import torch

from ..errors import VoiceError
from ..model import BOS, EOS, N_SPECIAL_AUDIO, PAD
from .dataset import TuningExample


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
