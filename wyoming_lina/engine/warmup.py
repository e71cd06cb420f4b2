"""Preparing the engine's fast paths while it already serves.

On CUDA the fast paths take long to prepare on a first start (``torch.compile`` of the step: a
minute or more; 100+ codec graphs: seconds; FLA's prefill autotuning: seconds per batch size),
and a server must answer meanwhile. ``WarmUp`` runs on its own thread and prepares them in
pieces: each piece that touches the engine's state runs on the engine thread between two
iterations (``Engine.execute``), so no request waits more than one piece (milliseconds); the
building and compiling run here, on this thread, and their results take over when ready:

1. the engine thread defers Triton kernels (``triton_support.defer_kernels_here``): it serves in
   plain PyTorch, which needs nothing built, while this thread builds them;
2. the step's static buffers; here: the plain (uncompiled) step run once per bucket on a twin's
   buffers, the prompt prefill at every padded batch size (fla-core's autotuning), the codec
   decoding every window size: every kernel built and loaded; then the engine thread uses them;
3. the step's graphs, every bucket; the codec's window graphs (until a size is captured, its
   windows decode eagerly);
4. here: the compiled step; its graphs, one per iteration, then it takes over.

While it prepares on CUDA, Python's switch interval is at most ``WARM_UP_SWITCH_INTERVAL``: the
compile is pure Python for minutes, and the engine thread, which releases the GIL at every PyTorch
call, waits up to one interval for it each time (with the default 5 ms a request on an H200 waited
0.8-10 s for its first audio while the step compiled; ``bench/warmup_convoy.py`` measures it on
a CPU). The CPU has nothing to prepare. A failure in a step leaves the engine serving on the paths it
has (logged). ``stage`` says where it is: "plain" (CPU); on CUDA "pytorch" (kernels deferred),
"kernels", "graphs", "compiled".
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable

import torch

from ..triton_support import defer_kernels_here
from .loop import Engine

_LOGGER = logging.getLogger(__name__)

# s, while the warm-up compiles (module docstring). bench/warmup_convoy.py on a 2-core EPYC (fixture
# models, a thread of pure Python beside the engine): first audio 52.8 s at Python's default 5 ms,
# 7.0 s at 1 ms, 3.0 s at 0.5, 1.3-1.5 s at 0.2, 0.8 s at 0.1; the Python thread kept 81-88% of its
# rate at 0.2 ms, 76% at 0.1. On the GPU the engine thread takes the GIL far fewer times per step.
WARM_UP_SWITCH_INTERVAL = 0.0002


@contextlib.contextmanager
def switch_interval_at_most(seconds: float):
    """``sys.setswitchinterval`` lowered to ``seconds`` inside the block (never raised: a lower
    setting stays), restored after. It is the process's setting: every thread switches sooner."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class WarmUp:
    def __init__(self, engine: Engine, on_stage: Callable[[str], None] | None = None):
        self.engine = engine
        self.on_stage = on_stage
        self.stage = "starting"
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.speed = None  # CpuSpeed, measured on a CPU
        self._started = time.monotonic()

    def start(self) -> WarmUp:
        threading.Thread(target=self._run, name="lina-warm-up", daemon=True).start()
        return self

    def _on_engine(self, fn, *args):
        """``fn(*args)`` on the engine thread, between iterations; waits for its result."""
        return self.engine.execute(functools.partial(fn, *args)).result()

    def _reach(self, stage: str, what: str) -> None:
        self.stage = stage
        _LOGGER.info("warm-up: %s after %.1f s%s", what, time.monotonic() - self._started, self._memory())
        if self.on_stage is not None:
            self.on_stage(stage)

    def _memory(self) -> str:
        """On CUDA, the GPU memory this process holds (PyTorch's allocator; the CUDA context adds
        a few hundred MiB that only nvidia-smi shows)."""
        device = self.engine.model.device
        if device.type != "cuda":
            return ""
        return f" ({torch.cuda.memory_reserved(device) / 2**30:.2f} GiB of GPU memory reserved)"

    def _run(self) -> None:
        try:
            self.prepare()
        except Exception as err:  # the engine keeps serving on what it has
            self.error = err
            _LOGGER.warning("warm-up stopped (%s: %s); serving on the paths prepared so far", type(err).__name__, err)
        finally:
            self.done.set()

    def prepare_cpu(self) -> None:
        """On a CPU, before the engine serves: time the step and the codec (about a second; a
        measurement beside traffic would measure the traffic; with ``cpu_quant`` q8 the codec in
        bfloat16 too, kept where faster: ``choose_codec_dtype``, and a prompt's prefill likewise:
        ``bf16_prompts_faster``), choose the streaming windows from
        them (under a second of simulation; every stream then opens with the same windows, so a
        request sounds the same whenever it comes) and say how fast this machine speaks."""
        from .cpu_speed import bf16_prompts_faster, choose_codec_dtype, choose_streaming, describe, measure

        engine = self.engine
        if engine.model.device.type != "cpu":
            return
        self.speed = self._on_engine(measure, engine.model, engine.runner.step, engine.decoder.codec)
        if engine.settings.cpu_quant == "q8":  # (none: the model and the codec exactly, float32)
            self.speed = self._on_engine(choose_codec_dtype, engine.decoder.codec, self.speed)
            prefill = engine.runner.prefill
            if prefill.bf16_prompts and not self._on_engine(bf16_prompts_faster, engine.model):
                self._on_engine(prefill.keep_prompts_float32)
                _LOGGER.info("voice prompts are prefilled in float32: bfloat16 is no faster on this CPU")
        config, keeps_up = choose_streaming(self.speed)
        engine.decoder.config = config
        (_LOGGER.info if keeps_up else _LOGGER.warning)("%s", describe(self.speed, config, keeps_up))

    def prepare(self) -> None:
        keys = self.engine.runner.graph_keys()
        if not keys:
            if self.engine.model.device.type == "cpu" and self.speed is None:
                self.prepare_cpu()  # (the server calls it before serving)
            self._reach("plain", "the plain step serves (nothing to compile on this device)")
            return
        with switch_interval_at_most(WARM_UP_SWITCH_INTERVAL):
            self._prepare_graphs(keys)

    def _prepare_graphs(self, keys) -> None:
        runner, decoder = self.engine.runner, self.engine.decoder
        # Until the kernels are built here, the engine thread serves in plain PyTorch: a request
        # that built a kernel itself would wait for it (on a first start fla-core's prefill
        # autotuning alone held the first request for 100+ s, measured on an H200).
        self._on_engine(defer_kernels_here)
        self._reach("pytorch", "serving in plain PyTorch while the kernels are built")
        self._on_engine(runner.allocate)
        runner.prepare_kernels(keys)  # this thread: the step's kernels are built and loaded
        sizes = runner.prefill.warm()  # this thread: fla-core's autotuning at every prefill batch
        codec_keys = self._on_engine(decoder.prepare_graphs, self.engine.settings.max_batch)
        decoder.prepare_kernels(codec_keys)  # this thread: the codec's kernels at every window size
        self._on_engine(defer_kernels_here, False)
        self._reach("kernels", f"kernels built (prefill tuned for batches {sizes}); the engine uses them")
        for key in keys:
            self._on_engine(runner.capture, key)  # milliseconds each, between iterations
        self._reach("graphs", f"{len(keys)} graphs of the plain step captured; serving with them")
        for key in codec_keys:
            self._on_engine(decoder.capture_graph, key)
        _LOGGER.info(
            "warm-up: %d codec graphs captured after %.1f s", len(codec_keys), time.monotonic() - self._started
        )
        if runner.compile_wanted:
            runner.precompile(keys)  # this thread: minutes on a first start, seconds with warm caches
            for key in keys:
                self._on_engine(runner.capture_compiled, key)
            self._on_engine(runner.use_compiled)
            self._reach("compiled", f"the compiled step took over ({len(keys)} graphs)")
