"""Building the serving stack: device and dtype decisions, model + codec + engine, warm-up.

The decisions are pure functions (availability passed in) so they are tested without a GPU.
``load_runtime`` is synchronous: ``serve`` runs it on a loading thread (``__main__._serve``)
while the event loop already answers ``describe`` from the data dir.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..codec import WavTokenizer, load_codec
from ..defaults import FRAMES_PER_SECOND, MAX_BATCH
from ..engine import Engine, StreamingDecoder, streaming_config_for
from ..engine.warmup import WarmUp
from ..errors import CheckpointError
from ..model import LinaModel, load_lina
from ..text import LinaTokenizer
from ..triton_support import check_triton
from .download import ModelFiles
from .options import RuntimeConfigError
from .service import ServingState

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
    if engine_settings.get("max_batch") is None:  # --max-batch not given: what this card can hold
        engine_settings["max_batch"] = default_max_batch(device)
    decoder = StreamingDecoder(codec, streaming_config_for(device))
    engine = Engine.create(model, decoder, compile=triton_ok, **engine_settings)
    _LOGGER.info("loaded the model and codec on %s (%s) in %.1f s", device, dtype, time.monotonic() - started)
    return Runtime(model, codec, tokenizer, engine, device, dtype)


# --- start-up: serve from the first seconds ---------------------------------------------------
# Per row of --max-batch the GPU holds: its recurrent state (13 GLA layers, ~3.4 MB in float32),
# its text context in the step's buffers (keys, values, positions for up to 512 tokens, ~3 MB in
# bf16), and its codec windows in flight (outputs, staging): ~10 MB with margin.
GPU_BYTES_PER_ROW = 10 * 1024**2
GPU_RESERVE_BYTES = 1024**3  # graphs' workspaces, compile, allocator slack


def default_max_batch(device: str) -> int:
    """``choose_max_batch`` for the memory free on ``device`` now (the model loaded); MAX_BATCH
    on the CPU. The choice is logged."""
    if not device.startswith("cuda"):
        return MAX_BATCH
    free, total = torch.cuda.mem_get_info(torch.device(device))
    rows = choose_max_batch(free)
    _LOGGER.info(
        "max batch %d: %.1f of %.1f GiB free on %s after loading, about %d MiB per row, half of it used "
        "(--max-batch sets it)", rows, free / 1024**3, total / 1024**3, device, GPU_BYTES_PER_ROW // 1024**2,
    )  # fmt: skip
    return rows


def choose_max_batch(free_bytes: int, *, share: float = 0.5, per_row: int = GPU_BYTES_PER_ROW) -> int:
    """The --max-batch default on a GPU: as many rows as ``share`` of the memory free after the
    model loaded holds (the rest stays for other programs on a shared card: a local LLM, a
    speech-to-text model), a power of two from 1 to MAX_BATCH."""
    budget = max(0, int(share * free_bytes) - GPU_RESERVE_BYTES)
    rows = max(1, min(MAX_BATCH, budget // per_row))
    return 1 << (rows.bit_length() - 1)


def cache_environment(data_dir: Path, environ: dict) -> dict[str, str]:
    """Where the compiler's and Triton's caches (compiled kernels, autotuning results) go unless
    the user chose: the data dir, so a restart with the same model and GPU finds them."""
    cache = Path(data_dir) / ".cache"
    wanted = {
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
        "TRITON_CACHE_AUTOTUNING": "1",
    }
    return {key: value for key, value in wanted.items() if key not in environ}


def warm_up(engine: Engine, state: ServingState) -> WarmUp:
    """The engine's warm-up (engine/warmup.py), reporting its stages to ``state``: call
    ``prepare_cpu`` before the engine serves, ``start`` once it does."""

    def reached(stage: str) -> None:
        state.step = stage
        if stage in ("plain", "compiled"):
            state.phase = "warm"

    return WarmUp(engine, on_stage=reached)
