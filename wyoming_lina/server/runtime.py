"""Building the serving stack: device and dtype decisions, model + codec + engine, warm-up.

The decisions are pure functions (availability passed in) so they are tested without a GPU.
Loading is synchronous and happens before the event loop serves anyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import torch

from ..codec import WavTokenizer, load_codec
from ..defaults import FRAMES_PER_SECOND
from ..engine import Engine, StreamingDecoder, streaming_config_for
from ..engine.synthesizer import Synthesizer
from ..errors import CheckpointError
from ..model import LinaModel, load_lina
from ..text import LinaTokenizer
from ..triton_support import check_triton
from .download import ModelFiles
from .options import RuntimeConfigError

_LOGGER = logging.getLogger(__name__)

LICENCE_NOTICE = """\
Model licences:
  Lina-Speech weights (lina-speech/all-models): CC BY-NC 4.0, non-commercial use only.
    https://huggingface.co/lina-speech/all-models  (Lemerle et al., IRCAM)
  WavTokenizer codec (novateur/WavTokenizer-medium-speech-75token): MIT.
  wyoming-lina code: MIT.
Tell listeners that the speech is synthetic, unless the person whose voice is cloned agreed."""


def choose_device(requested: str, *, cuda_available: bool, cuda_count: int = 1) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; an explicit CUDA request must be satisfiable."""
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    if requested.startswith("cuda"):
        if not cuda_available:
            raise RuntimeConfigError(
                f"--device {requested}: no CUDA device is visible (check the NVIDIA driver, "
                "and --gpus all / the NVIDIA container toolkit in Docker); use --device auto or cpu"
            )
        index = int(requested.partition(":")[2] or 0)
        if index >= cuda_count:
            raise RuntimeConfigError(f"--device {requested}: only {cuda_count} CUDA device(s) are visible")
        return requested
    if requested == "cpu":
        return "cpu"
    raise RuntimeConfigError(f"unknown device {requested!r}")


def choose_dtype(requested: str, device: str) -> str:
    """'auto' -> bfloat16 on CUDA, float32 on CPU; bfloat16 on CPU is refused (slow and untested)."""
    if requested == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if requested == "bfloat16" and not device.startswith("cuda"):
        raise RuntimeConfigError("--dtype bfloat16 needs a CUDA device; use float32 on CPU")
    if requested not in ("float32", "bfloat16"):
        raise RuntimeConfigError(f"unknown dtype {requested!r}")
    return requested


def max_frames_for(seconds: float) -> int:
    return max(1, int(round(seconds * FRAMES_PER_SECOND)))


@dataclass
class Runtime:
    model: LinaModel
    codec: WavTokenizer
    tokenizer: LinaTokenizer
    engine: Engine
    device: str
    dtype: str


def load_runtime(files: ModelFiles, device: str, dtype: str, **engine_settings) -> Runtime:
    """Load everything on ``device`` (strict checkpoint loading) and create the (stopped) engine
    (``engine_settings``: ``EngineSettings`` fields such as max_batch and max_queue)."""
    started = time.monotonic()
    # On CUDA, prove once that Triton compiles and launches a kernel here; if it cannot, every
    # Triton user (kernels, fla-core, torch.compile) takes the plain PyTorch path instead.
    triton_ok = device.startswith("cuda") and check_triton(device).usable
    weights_dtype = None if dtype == "float32" else getattr(torch, dtype)
    model = load_lina(files.lina, device=device, dtype=weights_dtype, trusted=files.lina_trusted)
    codec = load_codec(files.codec_config, files.codec_checkpoint, device=device, dtype=weights_dtype)
    if model.config.n_codes != codec.config.codebook_size:
        raise CheckpointError(
            f"the Lina model predicts {model.config.n_codes} codec codes but the WavTokenizer has "
            f"{codec.config.codebook_size}: these files do not belong together"
        )
    tokenizer = LinaTokenizer(files.tokenizer)
    decoder = StreamingDecoder(codec, streaming_config_for(device))
    engine = Engine.create(model, decoder, compile=triton_ok, **engine_settings)
    _LOGGER.info("loaded the model and codec on %s (%s) in %.1f s", device, dtype, time.monotonic() - started)
    return Runtime(model, codec, tokenizer, engine, device, dtype)


async def warm_up(synthesizer: Synthesizer, voice: str | None = None, text: str = "Hello.") -> float:
    """One short synthesis (first-use costs paid before any client waits), then the step graphs,
    the prefill sizes and the codec graphs, all on the engine thread; returns its seconds."""
    started = time.monotonic()
    samples = 0
    async for chunk in synthesizer.synthesize(text, voice):
        samples += len(chunk)
    engine = synthesizer.engine
    graphs = await asyncio.wrap_future(engine.execute(engine.warm_graphs))
    prefills = await asyncio.wrap_future(engine.execute(engine.warm_prefill))
    codec_graphs = await asyncio.wrap_future(engine.execute(engine.warm_codec))
    elapsed = time.monotonic() - started
    _LOGGER.info(
        "warm-up: %.2f s of audio, %d step graphs and %d codec graphs captured, prefill tuned for batches %s, in %.2f s",
        samples / synthesizer.sample_rate, graphs, codec_graphs, prefills or "-", elapsed,
    )  # fmt: skip
    return elapsed
