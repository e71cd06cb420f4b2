"""Every Triton kernel against its naive twin, with fresh random inputs and NaN-poisoned outputs.

* ``model/kernels.py::chunked_gla`` (no Triton: what runs while the kernels are deferred) against
  the per-frame loop, both on CUDA.
* ``model/triton_step.py`` (the one-kernel GLA decode step): ``GatedLinearAttention.step_in_place``
  with ``fused_step`` on against the same layer's plain PyTorch step (off), output and state.
* ``model/triton_gemv.py``: against ``F.linear`` and a float64 product.
* ``codec/triton_dwconv.py`` and ``codec/triton_groupnorm.py``: against their CPU twins as the
  codec runs them (``backbone.depthwise_conv_over_time`` / ``group_norm_over_time`` on CPU tensors).

Bounds (relative, ||got - want|| / ||want||): float32 1e-5 (the kernels accumulate in float32 like
their twins; docs/gpu.md measures the GLA step at 1e-6 of the float32 reference). A bf16 output is
the float32 result rounded once: at most 2^-8 = 3.9e-3 per element, so 5e-3 against a float64 or
float32 twin of the same bf16 inputs and 1e-2 against a bf16 twin (both rounded).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wyoming_lina.codec import backbone
from wyoming_lina.model import GLAConfig, GLAState, cast_weights
from wyoming_lina.model.gla import GatedLinearAttention
from wyoming_lina.model.kernels import chunked_gla, gla, naive_gla
from wyoming_lina.triton_support import defer_kernels_here

from .conftest import assert_rel, poison_allocations, requires_cuda

pytestmark = requires_cuda

FP32, BF16 = 1e-5, 5e-3
BF16_TWINS = 1e-2


@pytest.fixture(scope="module", autouse=True)
def triton():
    return pytest.importorskip("triton")


def fresh_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the GLA decode step (model/triton_step.py) --------------------------------------------------------------
GLA_SHAPES = {
    "tiny": GLAConfig(d_model=64, key_dim=32, value_dim=64, heads=2, hidden=85, gate_rank=16, short_conv=True),
    "full": GLAConfig(d_model=1024, key_dim=512, value_dim=1024, heads=8, hidden=1365, gate_rank=16, short_conv=True),
    "mid": GLAConfig(d_model=256, key_dim=128, value_dim=256, heads=4, hidden=256, gate_rank=8, short_conv=True),
}


def random_gla_layer(cfg: GLAConfig, dtype: torch.dtype, seed: int) -> GatedLinearAttention:
    """A GLA layer with random weights (decays in the trained range: gate bias as bench/full_size.py),
    its big matrices in ``dtype`` as ``cast_weights`` stores them, fused as on CUDA."""
    gen = fresh_generator(seed)
    layer = GatedLinearAttention(cfg)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name == "gk_proj.1.bias":
                p.copy_(torch.empty(p.shape).uniform_(-2, 4, generator=gen))
            elif name == "g_norm_swish_gate.weight":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
    layer = cast_weights(layer.cuda(), dtype)
    layer.fuse_projections()
    assert layer.can_fuse_step()
    return layer


def random_gla_state(cfg: GLAConfig, batch: int, gen: torch.Generator) -> GLAState:
    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).cuda()

    return GLAState(
        randn(batch, cfg.key_dim, cfg.conv_size),
        randn(batch, cfg.key_dim, cfg.conv_size),
        randn(batch, cfg.value_dim, cfg.conv_size),
        randn(batch, cfg.heads, cfg.head_k, cfg.head_v, scale=0.3),
    )


@pytest.mark.parametrize("shape", sorted(GLA_SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("batch", [1, 5, 64])
@torch.inference_mode()
def test_fused_gla_step_equals_the_plain_step(shape, dtype, batch):
    """Ten steps of the same layer with the one-kernel Triton step and with the plain PyTorch step
    (short convs, gate, recurrence, norm and output gate), from one random state: the same output
    and the same conv windows and S, updated in place."""
    cfg = GLA_SHAPES[shape]
    layer = random_gla_layer(cfg, dtype, seed=batch)
    gen = fresh_generator(100 + batch)
    fused = random_gla_state(cfg, batch, gen)
    plain = GLAState(*(t.clone() for t in fused))
    out_bound = FP32 if dtype == torch.float32 else BF16_TWINS  # the o_proj input is rounded to bf16 on both paths
    for step in range(10):
        h = torch.randn(batch, 1, cfg.d_model, generator=gen).cuda()
        layer.fused_step = True
        poison_allocations(((batch, cfg.value_dim), dtype))  # the kernel's output
        got = layer.step_in_place(h, fused)
        layer.fused_step = False
        want = layer.step_in_place(h, plain)
        assert got.shape == want.shape == (batch, 1, cfg.d_model)
        assert_rel(got, want, out_bound, f"step {step} output")
        for name, a, b in zip(GLAState._fields, fused, plain):
            assert_rel(a, b, FP32, f"step {step} {name}")  # the state is float32 on both paths


@torch.inference_mode()
def test_fused_gla_step_updates_rows_of_a_larger_buffer_only():
    """The captured step passes rows [:B] of buffers sized for 256 rows: the kernel writes those
    rows' state in place and leaves the others untouched."""
    cfg = GLA_SHAPES["full"]
    layer = random_gla_layer(cfg, torch.bfloat16, seed=3)
    gen = fresh_generator(4)
    buffers = random_gla_state(cfg, 16, gen)
    before = GLAState(*(t.clone() for t in buffers))
    rows = GLAState(*(t[:6] for t in buffers))
    plain = GLAState(*(t[:6].clone() for t in buffers))
    h = torch.randn(6, 1, cfg.d_model, generator=gen).cuda()
    layer.fused_step = True
    got = layer.step_in_place(h, rows)
    layer.fused_step = False
    want = layer.step_in_place(h, plain)
    assert_rel(got, want, BF16_TWINS, "output")
    for name, buf, old, new in zip(GLAState._fields, buffers, before, plain):
        assert_rel(buf[:6], new, FP32, f"{name} rows in use")
        assert torch.equal(buf[6:], old[6:]), f"{name}: rows beyond the batch were written"


# --- the chunked recurrence (model/kernels.py::chunked_gla): CUDA's prefill while kernels are deferred ----------
@pytest.mark.parametrize("batch", [1, 4])
@torch.inference_mode()
def test_chunked_recurrence_on_cuda_equals_the_loop_and_runs_while_kernels_are_deferred(batch):
    """375 frames at full size: chunked_gla on CUDA against the per-frame loop on CUDA (matmuls in
    float32, TF32 off as PyTorch's default); with this thread's kernels deferred (the plain-PyTorch
    phase of a first start) ``gla`` runs it, not fla's kernels nor the loop."""
    gen = fresh_generator(7 + batch)
    shape = (batch, 375, 8, 64)
    q, k = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen) / 8
    v = torch.randn(batch, 375, 8, 128, generator=gen)
    g = F.logsigmoid(torch.empty(shape).uniform_(-2, 4, generator=gen) + torch.randn(shape, generator=gen)) / 16
    s0 = 0.3 * torch.randn(batch, 8, 64, 128, generator=gen)
    q, k, v, g, s0 = (t.cuda() for t in (q, k, v, g, s0))
    want_out, want_state = naive_gla(q, k, v, g, s0, 0.125)
    out, state = chunked_gla(q, k, v, g, s0, 0.125)
    assert_rel(out, want_out, FP32, "output")
    assert_rel(state, want_state, FP32, "state")
    defer_kernels_here()
    try:
        deferred_out, deferred_state = gla(q, k, v, g, s0, 0.125)
    finally:
        defer_kernels_here(False)
    assert torch.equal(deferred_out, out) and torch.equal(deferred_state, state)


# --- the small-batch GEMV (model/triton_gemv.py) ---------------------------------------------------------------
# Lina's logits head (odd width; K a multiple of every BLOCK_K), its fused q/k/v/g/gate projection,
# the tiny model's head (K below every BLOCK_K: the masked path)
GEMV_SHAPES = [(1024, 4099), (1024, 3584), (64, 67)]


@pytest.mark.parametrize("k,n", GEMV_SHAPES, ids=[f"k{k}-n{n}" for k, n in GEMV_SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@torch.inference_mode()
def test_gemv_equals_the_matrix_product(k, n, dtype):
    from wyoming_lina.model.layers import GEMV_MAX_ROWS
    from wyoming_lina.model.triton_gemv import gemv, launch, tiles

    gen = fresh_generator(k + n)
    weight = (torch.randn(n, k, generator=gen) / k**0.5).to(dtype).cuda()
    bound = FP32 if dtype == torch.float32 else BF16
    for rows in range(1, GEMV_MAX_ROWS + 1):
        x = torch.randn(rows, k, generator=gen).to(dtype).cuda()
        exact = x.double() @ weight.double().T
        out = torch.full((rows, n), float("nan"), dtype=dtype, device="cuda")  # poisoned output
        launch(x, weight, out, tiles(rows))
        assert_rel(out, exact, bound, f"launch, {rows} rows")
        poison_allocations(((rows, n), dtype))
        got = gemv(x, weight, dtype)
        assert_rel(got, exact, bound, f"gemv, {rows} rows")
        assert_rel(
            got, F.linear(x, weight), FP32 if dtype == torch.float32 else BF16_TWINS, f"gemv vs F.linear, {rows} rows"
        )


# --- the codec's depthwise conv (codec/triton_dwconv.py) ---------------------------------------------------------
# (B, T, C): tiny codec width (C < the kernel's channel block), T shorter than the kernel,
# one first window, odd sizes, a full batch of steady windows.
CONV_SHAPES = [(2, 37, 64), (3, 2, 768), (1, 36, 768), (97, 131, 768), (64, 300, 768)]


def cpu_twin(module: nn.Module) -> nn.Module:
    """A float32 CPU copy of a module (the CPU path's weights: the same values, upcast)."""
    import copy

    return copy.deepcopy(module).float().cpu()


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=["x".join(map(str, s)) for s in CONV_SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@torch.inference_mode()
def test_depthwise_conv_equals_the_cpu_twin(shape, dtype):
    from wyoming_lina.codec.triton_dwconv import depthwise_conv_time

    B, T, C = shape
    torch.manual_seed(B * T + C)
    conv = nn.Conv1d(C, C, 7, padding=3, groups=C).to("cuda", dtype)  # as ConvNeXtBlock.dwconv
    x = torch.randn(B, T, C, dtype=dtype, device="cuda")
    want = backbone.depthwise_conv_over_time(x.float().cpu(), cpu_twin(conv))  # the CPU path
    poison_allocations((shape, dtype))
    got = depthwise_conv_time(x, conv.weight, conv.bias, conv.padding[0])
    assert got.dtype == dtype
    assert_rel(got, want, FP32 if dtype == torch.float32 else BF16, "Triton depthwise conv vs the CPU path")
    assert torch.equal(backbone.depthwise_conv_over_time(x, conv), got), (
        "the codec's CUDA path does not run the Triton kernel"
    )


# --- the codec's GroupNorm (+ SiLU) (codec/triton_groupnorm.py) ---------------------------------------------------
# (B, T, C): a group of 24 channels (the full codec's 768 / 32: padded to 32 in the kernel), one
# frame, the tiny codec's 2 channels per group, T beyond the kernel's 64-frame block.
NORM_SHAPES = [(2, 37, 768), (1, 1, 768), (3, 130, 64), (16, 180, 768), (64, 300, 768)]


@pytest.mark.parametrize("shape", NORM_SHAPES, ids=["x".join(map(str, s)) for s in NORM_SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("silu", [False, True], ids=["plain", "silu"])
@torch.inference_mode()
def test_group_norm_equals_the_cpu_twin(shape, dtype, silu):
    from wyoming_lina.codec.triton_groupnorm import group_norm_time

    B, T, C = shape
    gen = fresh_generator(B * T + C + silu)
    norm = backbone.group_norm(C)  # 32 groups, eps 1e-6, as every GroupNorm of the codec
    with torch.no_grad():
        norm.weight.copy_(1 + 0.2 * torch.randn(C, generator=gen))
        norm.bias.copy_(0.2 * torch.randn(C, generator=gen))
    norm = norm.to("cuda", dtype)
    # an offset mean and a spread: the variance is taken in a second pass, no cancellation
    x = (2 + 3 * torch.randn(B, T, C, generator=gen)).to("cuda", dtype)
    want = backbone.group_norm_over_time(x.float().cpu(), cpu_twin(norm), silu=silu)  # the CPU path
    groups = norm.num_groups
    poison_allocations((shape, dtype), ((B, groups), torch.float32))
    got = group_norm_time(x, groups, norm.weight, norm.bias, norm.eps, silu)
    assert got.dtype == dtype
    assert_rel(got, want, FP32 if dtype == torch.float32 else BF16, "Triton GroupNorm vs the CPU path")
    assert torch.equal(backbone.group_norm_over_time(x, norm, silu=silu), got), (
        "the codec's CUDA path does not run the Triton kernel"
    )


@torch.inference_mode()
def test_poisoned_allocations_come_back_as_nan():
    """The poisoning the kernel tests rely on: after it, fresh outputs of that size hold NaN."""
    assert poison_allocations(((64, 300, 768), torch.bfloat16), ((3, 32), torch.float32))
    assert torch.isnan(torch.empty(64, 300, 768, dtype=torch.bfloat16, device="cuda").cpu()).all()
