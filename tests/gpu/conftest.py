"""Shared helpers of the GPU suite: CUDA models as the server runs them, relative-error checks,
NaN-poisoned allocations, and the margin of a sampling decision.

Every module here skips without CUDA (``pytestmark = requires_cuda``), so CI (no GPU) and the CPU
suite never run it; ``script/test-gpu`` does, on a GPU machine. Models are built once per session
and shared: a full-size compile and capture costs 10-30 s per batch-size regime.

Tolerances are relative, in the style of flash-linear-attention's tests (shared/spec/style.md
item 8): ``||got - want|| / ||want||``, and a NaN or infinity never passes.
"""

from __future__ import annotations

import importlib
import math
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from wyoming_lina.engine import GenerationJob
from wyoming_lina.engine.batch import ActiveBatch
from wyoming_lina.engine.prefill import Prefiller
from wyoming_lina.engine.sampling import allowed_logits, counter_uniform
from wyoming_lina.model import GLAState, LinaState, TextContext

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench"

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run script/test-gpu there)")


def bench_module(name: str):
    """A module of bench/ (full-size random models: full_size.py, codec_models.py)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


# --- process-wide settings for the suite ------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def gpu_suite_settings():
    """float32 means float32 (cuDNN convolutions default to TF32, which puts a float32 codec 1e-3
    away from itself at another batch size; bench/codec_gpu_check.py turns it off the same way),
    and room for every model of the suite in torch.compile's cache: the server compiles one model
    per process, this suite two (the tiny and the full-size one), each in up to four batch-size
    regimes (the small-batch GEMV branches, ``layers.gemv_wins``)."""
    import torch._dynamo

    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    limits = {}
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            try:
                limits[name] = getattr(torch._dynamo.config, name)
                setattr(torch._dynamo.config, name, max(limits[name], 64))
            except Exception:  # an alias that cannot be set in this version
                limits.pop(name, None)
    yield
    torch.backends.cudnn.allow_tf32 = tf32
    for name, value in limits.items():
        setattr(torch._dynamo.config, name, value)


# --- models on CUDA, as the server prepares them ------------------------------------------------
@pytest.fixture(scope="session")
def vec(lina_dir):
    from safetensors.torch import load_file

    return load_file(str(lina_dir / "vectors.safetensors"))


@pytest.fixture(scope="session")
def tiny_lina(lina_dir):
    """The upstream tiny Lina model, float32 on CUDA, prepared as ``Engine.create`` prepares it
    (fused projections, the one-kernel Triton GLA step, the small-batch GEMV)."""
    from wyoming_lina.model import load_lina

    return load_lina(lina_dir / "model.ckpt", device="cuda").fuse_projections()


@pytest.fixture(scope="session")
def tiny_voice(lina_dir, tiny_lina):
    """The fixture's IST speaker state on the tiny model."""
    from wyoming_lina.model import load_speaker_state

    return load_speaker_state(lina_dir / "speaker_state.safetensors", tiny_lina)


@pytest.fixture(scope="session")
def full_lina(lina_dir):
    """The full-size model (published shapes, bench/full_size.py's random weights), bf16 weights
    on CUDA as served (``--dtype auto``), prepared as ``Engine.create`` prepares it."""
    from wyoming_lina.model import cast_weights

    full_size = bench_module("full_size")
    model = full_size.random_full_size_lina("cpu", manifest=lina_dir / "full-size-keys.json").cuda()
    cast_weights(model, torch.bfloat16)
    return model.fuse_projections()


@pytest.fixture(scope="session")
def full_voice(full_lina):
    """An IST-like initial state for the full-size model (as bench/bench_engine.py makes one)."""
    from wyoming_lina.model import InitialState

    cfg = full_lina.config.gla
    gen = torch.Generator().manual_seed(7)
    return InitialState(
        [
            (0.02 * torch.randn(1, cfg.heads, cfg.head_k, cfg.head_v, generator=gen)).cuda()
            for _ in range(2 * full_lina.config.n_layer)
        ]
    )


@pytest.fixture(scope="session")
def tiny_codec_cuda(codec_dir):
    """The upstream tiny WavTokenizer, float32 on CUDA."""
    from wyoming_lina.codec import load_codec

    return load_codec(codec_dir / "config.yaml", codec_dir / "model.ckpt", device="cuda")


@pytest.fixture(scope="session")
def full_codec_cuda():
    """The full-size WavTokenizer (bench/codec_models.py's random weights), bf16 backbone on CUDA
    as served."""
    codec_models = bench_module("codec_models")
    return codec_models.move(codec_models.random_codec(), "cuda", torch.bfloat16).eval()


def captured_decoder(codec):
    """A streaming decoder with the GPU window geometry and every codec window graph captured, as
    ``Engine.warm_codec`` leaves it."""
    from wyoming_lina.engine import StreamingDecoder, streaming_config_for

    decoder = StreamingDecoder(codec, streaming_config_for("cuda"))
    decoder.capture_graphs()
    return decoder


@pytest.fixture(scope="session")
def tiny_decoder(tiny_codec_cuda):
    return captured_decoder(tiny_codec_cuda)


@pytest.fixture(scope="session")
def full_decoder(full_codec_cuda):
    return captured_decoder(full_codec_cuda)


# --- relative errors ------------------------------------------------------------------------------
def rel_err(got, want) -> float:
    """||got - want|| / ||want|| in float64; infinite if either holds a NaN or an infinity."""
    got = torch.as_tensor(got).detach().to("cpu", torch.float64)
    want = torch.as_tensor(want).detach().to("cpu", torch.float64)
    assert got.shape == want.shape, f"shapes differ: {tuple(got.shape)} vs {tuple(want.shape)}"
    if not (torch.isfinite(got).all() and torch.isfinite(want).all()):
        return math.inf
    diff, scale = float((got - want).norm()), float(want.norm())
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def assert_rel(got, want, bound: float, what: str) -> float:
    err = rel_err(got, want)
    assert err <= bound, f"{what}: ||got - want|| / ||want|| = {err:.3g} > {bound:.3g}"
    return err


def state_errors(got: LinaState, want: LinaState) -> dict[str, float]:
    """Relative error of every tensor of every layer's state (conv windows and S)."""
    errors = {}
    for i, (a, b) in enumerate(zip(got.layers, want.layers)):
        for name, x, y in zip(GLAState._fields, a, b):
            if x is not None:
                errors[f"layer {i} {name}"] = rel_err(x, y)
    return errors


# --- NaN-poisoned fresh outputs -----------------------------------------------------------------------
def poison_allocations(*specs: tuple[tuple[int, ...], torch.dtype], count: int = 4) -> bool:
    """Leave NaN in the CUDA caching allocator's free blocks of these (shape, dtype) sizes, so the
    next ``torch.empty`` of that size a kernel wrapper makes for its output starts as NaN and any
    element the kernel fails to write shows (flash-linear-attention poisons its outputs the same
    way). Checked: ``count`` allocations of each size right after come back all NaN. Returns
    whether the check held (a warning says when it did not: the test then still compares values,
    only without the poison)."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # whole free segments go back: fresh ones hold only the NaN blocks
    for shape, dtype in specs:
        for attempt in range(1, 6):
            blocks = [torch.full(shape, float("nan"), dtype=dtype, device="cuda") for _ in range(16 * attempt)]
            del blocks
            probes = [torch.empty(shape, dtype=dtype, device="cuda") for _ in range(count)]
            poisoned = all(bool(torch.isnan(p.cpu()).all()) for p in probes)  # on the host: no device allocation
            del probes
            if poisoned:
                break
        else:
            warnings.warn(f"could not poison fresh allocations of {shape} {dtype}", stacklevel=2)
            return False
    return True


def fixture_texts(vec) -> list[list[int]]:
    """Token ids of four texts of the fixture tokenizer: 30, 13, 21 and 58 tokens (text buckets 32 and 64)."""
    ids = vec["text_ids"][0].tolist()  # [BOS] ... [EOS]
    return [ids, ids[:12] + [ids[-1]], ids[:5] + ids[14:], ids[:-1] + ids[1:]]


# --- rows and batches -----------------------------------------------------------------------------
def row_for(job: GenerationJob) -> SimpleNamespace:
    """What the batch and the graphed step read of a row: its job (``ActiveBatch.max_k``)."""
    return SimpleNamespace(job=job)


def clone_batch(batch: ActiveBatch) -> ActiveBatch:
    """An independent copy of a batch's tensors (same rows)."""
    ctx = batch.ctx
    return ActiveBatch(
        rows=list(batch.rows),
        ctx=TextContext(ctx.keys.clone(), ctx.values.clone(), ctx.positions.clone(), ctx.mask.clone()),
        state=LinaState([GLAState(*(None if t is None else t.clone() for t in layer)) for layer in batch.state.layers]),
        **{name: getattr(batch, name).clone() for name in ActiveBatch._TENSORS},
    )


def prefiller(model) -> Prefiller:
    """The prefill as the CUDA engine runs it (prompt batches padded to powers of two)."""
    return Prefiller(model, pad=True, max_batch=32, cache_size=8)


def admit(prefill: Prefiller, jobs: list[GenerationJob], *batches: ActiveBatch) -> None:
    """Prefill ``jobs`` as the engine admits them (one pass per prompt length) and append them to
    each of ``batches`` (the first gets the prefilled tensors, the others copies)."""
    for group in prefill.groups(jobs):
        members = [jobs[i] for i in group]
        added, _ = prefill.prepare(members)
        added.rows = [row_for(job) for job in members]
        copies = [clone_batch(added) for _ in batches[1:]]
        batches[0].extend(added)
        for batch, copy in zip(batches[1:], copies):
            batch.extend(copy)


# --- how close a sampling decision is to flipping ---------------------------------------------------
def decision_margins(logits, top_k, top_p, temperature, seeds, counters, max_k: int, min_frames) -> torch.Tensor:
    """Per row, the smallest change of the logits (in max norm, logit units) that could change the
    token ``sample_tokens`` draws from them (a conservative first-order bound, float64).

    Greedy rows: half the gap between the best and the second-best allowed logit. Sampled rows (the
    same top-k, nucleus and counter-based draw u as ``sample_tokens``): a logit change of d moves
    every boundary of the cumulative distribution, and u with it, by at most 2 d / temperature, so
    the draw's distance to the nearest boundary times temperature / 4 is safe, as is the distance of
    the nucleus cut to top_p at every rank whose cut could move u that far; and the chosen token keeps
    its rank while its logit stays apart from its neighbours' (half their gaps). Two computations of
    one step that differ by float rounding can only disagree where this margin is below their logit
    difference."""
    z = allowed_logits(logits, counters, min_frames).double()
    greedy = (top_k == 1) | (temperature == 0)
    temp = torch.where(greedy, torch.ones_like(temperature), temperature).double()
    k = min(max(max_k, 2), z.shape[-1])  # ranks past a row's top_k are masked below; 2 for the greedy gap
    values, _ = torch.topk(z, k, dim=-1)
    rank = torch.arange(k, device=z.device)[None, :]
    scaled = (values / temp[:, None]).masked_fill(rank >= top_k[:, None], float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    before = probs.cumsum(-1) - probs
    cut = before >= top_p[:, None].double()
    kept = probs.masked_fill(cut, 0.0)
    cum = kept.cumsum(-1)
    u = counter_uniform(seeds, counters).to(cum.device) * cum[:, -1]
    choice = torch.searchsorted(cum, u[:, None]).clamp_max(k - 1)
    boundary = (cum - u[:, None]).abs().amin(-1)
    # cutting rank r (or keeping it) changes the kept mass by at most its tail, 1 - before[r]
    movable = (probs > 0) & (1 - before > boundary[:, None])
    inf = torch.tensor(math.inf, dtype=torch.float64, device=z.device)
    nucleus = torch.where(movable, (before - top_p[:, None].double()).abs(), inf).amin(-1)
    gaps = torch.nan_to_num(values[:, :-1] - values[:, 1:], nan=math.inf) / 2  # -inf - -inf: no neighbour
    edge = torch.full_like(gaps[:, :1], math.inf)
    left = torch.cat([edge, gaps], 1).gather(1, choice)[:, 0]
    right = torch.cat([gaps, edge], 1).gather(1, choice)[:, 0]
    sampled = torch.minimum(torch.minimum(boundary, nucleus) * temp / 4, torch.minimum(left, right))
    return torch.where(greedy, gaps[:, 0], sampled)


def logit_scale(logits: torch.Tensor) -> torch.Tensor:
    """Per row, the largest finite |logit| (what a relative logit error is relative to)."""
    z = logits.double()
    return torch.where(torch.isfinite(z), z.abs(), torch.zeros_like(z)).amax(-1)


@torch.inference_mode()
def replayed_margin(model, job: GenerationJob, tokens: list[int], t: int) -> tuple[float, float]:
    """(decision margin, largest |logit|) of the plain eager step at a job's step ``t``, its first
    ``t`` tokens teacher-forced: how near a tie the decision at ``t`` was."""
    batch = ActiveBatch()
    admit(prefiller(model), [job], batch)
    for s in range(t + 1):
        logits, batch.state = model.step(batch.ctx, batch.next_tokens, batch.state)
        if s < t:
            batch.next_tokens = torch.tensor([tokens[s]], device=logits.device)
            batch.counters = batch.counters + 1
    margin = decision_margins(
        logits, batch.top_k, batch.top_p, batch.temperature, batch.seeds, batch.counters, batch.max_k, batch.min_frames
    )
    return float(margin[0]), float(logit_scale(logits)[0])


def assert_same_tokens_up_to_a_near_tie(
    model, job, got: list[int], want: list[int], rtol: float, what: str
) -> int | None:
    """``got == want``, or they agree up to a step whose eager decision is a near-tie (margin below
    ``rtol`` x the largest |logit|: float rounding of a batch of another size may flip it, and the
    sequences part there). Returns the step where they part (None if equal)."""
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    if first is None:
        assert len(got) == len(want), f"{what}: same tokens, but {len(got)} vs {len(want)} of them"
        return None
    margin, scale = replayed_margin(model, job, want, first)
    assert margin <= rtol * scale, (
        f"{what}: tokens part at step {first} ({got[first]} vs {want[first]}) where the eager decision is "
        f"not a near-tie (margin {margin:.3g} > {rtol:g} x {scale:.3g})"
    )
    return first
