"""How the engine runs: one frozen settings object, validated when it is made.

``EngineSettings.for_device`` gives the measured settings for a device (bench/engine_phases.py
measured the CUDA queue depth and admission numbers at 256 streams); every default is defined
here once and read by the scheduler, the runner and the output processor.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..defaults import CPU_QUANT, MAX_BATCH, MAX_QUEUE
from .codec_graphs import capped_buckets
from .graphed_step import GraphConfig


@dataclass(frozen=True)
class EngineSettings:
    max_batch: int = MAX_BATCH  # rows generated together (--max-batch)
    max_queue: int = MAX_QUEUE  # sentences waiting for the engine (--max-queue)
    max_waiting_per_owner: int | None = None  # of those, from one owner (one request); None: max_queue / 16
    max_admit_per_step: int = 16  # rows admitted per loop iteration
    max_prefill_batch: int = 16  # voice-prompt prefills run in batches of at most this
    pad_prefill: bool = False  # prefill batches padded to powers of two (see prefill.padded_batch)
    prompt_cache_size: int = 32  # voices whose prompt encoder pass is kept
    decode_interval: int = 1  # steps between batched codec decodes of every row
    graphs: GraphConfig | None = None  # CUDA-graph step (None: the plain step)
    pipeline_depth: int = 1  # graphed: most steps queued on the device ahead of the host
    rows_per_queued_step: int = 8  # graphed: one more queued step per this many rows
    oom_recovery_iterations: int = 200  # good iterations before the batch cap doubles again
    cpu_quant: str = "none"  # CPU decode step: "q8" (model/cpu_step.py: ONNX Runtime, 8-bit) or "none" (float32)
    cpu_step_cache: str | None = None  # q8: where the built step is kept for the next start (the data dir's)

    def __post_init__(self):
        if self.max_waiting_per_owner is None and _positive(self.max_queue):
            object.__setattr__(self, "max_waiting_per_owner", max(1, self.max_queue // 16))
        positive = (
            "max_batch",
            "max_queue",
            "max_waiting_per_owner",
            "max_admit_per_step",
            "max_prefill_batch",
            "prompt_cache_size",
            "decode_interval",
            "pipeline_depth",
            "rows_per_queued_step",
            "oom_recovery_iterations",
        )
        problems = [
            f"{name} must be a positive integer, got {getattr(self, name)!r}"
            for name in positive
            if not _positive(getattr(self, name))
        ]
        if self.cpu_quant not in CPU_QUANT:
            problems.append(f"cpu_quant must be one of {', '.join(CPU_QUANT)}, got {self.cpu_quant!r}")
        if self.graphs is not None and self.max_batch > self.graphs.batch_buckets[-1]:
            problems.append(
                f"max_batch {self.max_batch} exceeds the largest graph bucket {self.graphs.batch_buckets[-1]}"
            )
        if problems:
            raise ValueError("engine settings: " + "; ".join(problems))

    @classmethod
    def for_device(cls, device_type: str, *, compile: bool = True, **overrides) -> EngineSettings:
        """The loop settings measured for a device. CUDA replays graphed steps with 4 to 32 steps
        queued ahead of the host's token processing (more at large batch), decodes codec windows
        in batches every 16 steps (213 ms of audio; a row's first audio is decoded as soon as it
        is ready), admits up to 256 requests per iteration and prefills prompts in padded batches
        of up to 32. The CPU runs the plain step and decodes every step."""
        if device_type == "cuda":
            rows = overrides.get("max_batch", MAX_BATCH)
            buckets = capped_buckets(GraphConfig.batch_buckets, max(2, rows))  # buffers for the rows allowed
            base = cls(
                max_batch=rows,
                graphs=GraphConfig(batch_buckets=buckets, compile=compile),
                decode_interval=16,
                pad_prefill=True,
                pipeline_depth=32,
                max_admit_per_step=256,
                max_prefill_batch=min(32, rows),  # (no prefill pass sized for more rows than can run)
            )
        else:
            base = cls()
        return dataclasses.replace(base, **overrides)

    def queued_steps(self, rows: int) -> int:
        """How many launched steps may wait for the host: at most ``pipeline_depth``, and at
        small batch no more than 4 (a step is short there and the host keeps up; every queued
        step delays noticing a row's first window or EOS by one step)."""
        return min(self.pipeline_depth, max(4, rows // self.rows_per_queued_step))


def _positive(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
