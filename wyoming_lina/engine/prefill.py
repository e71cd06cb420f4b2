"""Rows joining the batch: their texts encoded together and their voice prompts prefilled in ONE
parallel pass, producing the batch tensors (``ActiveBatch``) the decode step continues from.

The encoder half of a prompt's pass does not see the text, so it is computed once per voice and
cached (``PromptCache``); only the cross-attention and decoder half runs per request.

On a CPU whose decode step is quantized (``cpu_quant`` q8), a prompt's passes run their matrix
products in bfloat16 (``bf16_prompts``: autocast; AVX-512 BF16/AMX make them ~1.5-2.2x faster, a
5 s prompt's per-request pass 229 -> 150 ms on a 2-core Xeon, 333 -> 149 ms on a 2-core EPYC), the
state coming out in float32; where bfloat16 measures no faster at start-up (a CPU without those
instructions), prompts stay float32 (``keep_prompts_float32``). Its
error (0.7% of the state, 0.5% of the next step's logits on the full-size random model, docs/cpu.md)
is a tenth of what the quantized step itself adds at every frame. With ``cpu_quant`` none everything
stays float32: the fixture tests' exact path.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import random
from dataclasses import dataclass

import numpy as np
import torch

from ..model import BOS, N_SPECIAL_AUDIO, InitialState, LinaModel, LinaState
from .batch import ActiveBatch
from .job import GenerationJob
from .transfer import to_device


def prompt_length(job: GenerationJob) -> int:
    return 0 if job.prompt_codes is None else len(job.prompt_codes)


def padded_batch(n: int) -> int:
    """Prefill batch size for n prompts: the next power of two. FLA's chunked kernels autotune
    once per batch size (seconds each); a few sizes can all be tuned at start-up."""
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class EncodedPrompt:
    """A voice prompt's encoder pass ([BOS, codes[:-1]] from the voice's initial state)."""

    codes: torch.Tensor  # held so the ids in the cache key stay this voice's
    initial_state: InitialState | None
    encoded: torch.Tensor  # [1, P, d] encoder output
    state: LinaState  # the state with the encoder layers advanced over the prompt


class PromptCache:
    """The most recently used voices' encoder passes, keyed by identity of the prompt tensor and
    initial state (voices are immutable; the entry holds them, so the ids stay valid)."""

    def __init__(self, size: int, bf16: bool = False):
        self.size = size
        self.bf16 = bf16  # the encoder pass in bfloat16 (see the module docstring)
        self._entries: collections.OrderedDict[tuple[int, int], EncodedPrompt] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model: LinaModel, job: GenerationJob) -> EncodedPrompt:
        key = (id(job.prompt_codes), id(job.initial_state))
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit
        codes = to_device(job.prompt_codes, model.device, torch.long) + N_SPECIAL_AUDIO
        inputs = torch.cat([torch.full_like(codes[:1], BOS), codes[:-1]])[None]
        with lower_precision(self.bf16):
            encoded, state = model.encode_audio(inputs, model.init_state(1, job.initial_state))
        if self.bf16:  # (autocast's outputs back to the float32 the CPU model works in)
            encoded, state = encoded.float(), state.to(torch.float32)
        entry = self._entries[key] = EncodedPrompt(job.prompt_codes, job.initial_state, encoded, state)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry


def lower_precision(bf16: bool):
    """Matrix products in bfloat16 on the CPU (autocast) when ``bf16``; otherwise nothing changes."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


class Prefiller:
    def __init__(self, model: LinaModel, *, pad: bool, max_batch: int, cache_size: int, bf16_prompts: bool = False):
        self.model = model
        self.pad = pad  # pad prefill batches to powers of two (sizes tuned once at start-up)
        self.max_batch = max_batch  # prompts prefilled per pass
        self.bf16_prompts = bf16_prompts and model.device.type == "cpu"  # see the module docstring
        self.prompts = PromptCache(cache_size, self.bf16_prompts)

    def keep_prompts_float32(self) -> None:
        """Prefill prompts in float32 from now on (bfloat16 measured no faster on this CPU:
        ``cpu_speed.bf16_prompts_faster``); encoder passes cached in bfloat16 are dropped."""
        if self.bf16_prompts:
            self.bf16_prompts = False
            self.prompts = PromptCache(self.prompts.size, False)

    def groups(self, jobs: list[GenerationJob]) -> list[list[int]]:
        """Indices of ``jobs`` in the groups that start together: one prompt length (one voice)
        per group, at most ``max_batch`` prompts per group; jobs without a prompt all together."""
        by_length: dict[int, list[int]] = collections.defaultdict(list)
        for i, job in enumerate(jobs):
            by_length[prompt_length(job)].append(i)
        groups = []
        for length, members in by_length.items():
            size = self.max_batch if length else len(members)
            groups += [members[i : i + size] for i in range(0, len(members), size)]
        return groups

    @torch.inference_mode()
    def prepare(self, jobs: list[GenerationJob]) -> tuple[ActiveBatch, list[int]]:
        """Encode the texts and prefill the voice prompts (all of one length) in ONE parallel pass:
        the batch tensors of these jobs (no rows yet) and their sampling seeds. Every host -> GPU
        copy is queued without a sync (transfer.py): steps may be queued."""
        model, dev = self.model, self.model.device
        n = max(len(j.text_ids) for j in jobs)
        text = np.zeros((len(jobs), n), dtype=np.int64)
        for i, job in enumerate(jobs):
            text[i, : len(job.text_ids)] = job.text_ids
        text = to_device(text, dev)
        lengths = to_device([len(job.text_ids) for job in jobs], dev, torch.long)
        mask = torch.arange(n, device=dev)[None, :] < lengths[:, None]
        ctx = model.encode_text(text, mask)
        if not prompt_length(jobs[0]):  # one initial state per run of requests with the same voice
            runs = [list(g) for _, g in itertools.groupby(jobs, key=lambda job: id(job.initial_state))]
            state = LinaState.cat([model.init_state(len(run), run[0].initial_state) for run in runs])
            next_tokens = torch.full((len(jobs),), BOS, dtype=torch.long, device=dev)
        else:  # the voice's cached encoder pass starts from its initial state
            prompts = [self.prompts.get(model, job) for job in jobs]
            encoded, state = torch.cat([p.encoded for p in prompts]), LinaState.cat([p.state for p in prompts])
            count = len(jobs)
            size = padded_batch(count) if self.pad else count
            with lower_precision(self.bf16_prompts):
                if size == count:
                    state = model.prefill_from_encoded(ctx, encoded, state)
                else:  # padding rows repeat the last one; their results are dropped
                    rows = list(range(count)) + [count - 1] * (size - count)
                    state = model.prefill_from_encoded(ctx.select(rows), encoded[rows], state.select(rows))
                    state = state.select(slice(0, count))
            if self.bf16_prompts:
                state = state.to(torch.float32)
            last = torch.stack([job.prompt_codes[-1] for job in jobs]).long()
            next_tokens = to_device(last, dev) + N_SPECIAL_AUDIO
        seeds = [j.sampling.seed if j.sampling.seed is not None else random.getrandbits(62) for j in jobs]
        ints = to_device([[j.sampling.top_k for j in jobs], seeds, [j.min_frames for j in jobs]], dev, torch.long)
        floats = to_device(
            [[j.sampling.top_p for j in jobs], [j.sampling.temperature for j in jobs]], dev, torch.float32
        )
        batch = ActiveBatch(
            ctx=ctx,
            state=state,
            next_tokens=next_tokens,
            counters=torch.zeros(len(jobs), dtype=torch.long, device=dev),
            top_k=ints[0],
            top_p=floats[0],
            temperature=floats[1],
            seeds=ints[1],
            min_frames=ints[2],
        )
        return batch, seeds

    @torch.inference_mode()
    def warm(self, prompt_frames: int = 75) -> list[int]:
        """Run a prompt prefill at every padded batch size the loop can use, so kernel autotuning
        happens now and not in a client's first request. Returns the batch sizes warmed."""
        if not self.pad:
            return []
        sizes, n = [], 1
        while n <= padded_batch(self.max_batch):
            sizes.append(n)
            n *= 2
        model = self.model
        text = torch.full((1, 8), 3, dtype=torch.long, device=model.device)
        audio = torch.full((1, prompt_frames), BOS, dtype=torch.long, device=model.device)
        # as ``prepare`` runs it: the encoder pass at batch 1 (then cached), the rest padded
        encoded, state = model.encode_audio(audio, model.init_state(1))
        for size in sizes:
            rows = [0] * size
            ctx = model.encode_text(text.expand(size, -1))
            model.prefill_from_encoded(ctx, encoded[rows], state.select(rows))
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        return sizes
