"""The quantized CPU decode step (model/cpu_step.py) against the float32 model.

The float32 model stays the reference: these tests hold the quantized step to the agreement
written in docs/cpu.md, on the fixture model and on a full-size model with random weights
(the published shapes; its sensitivity to rounding is the worst case we can build here).
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

from wyoming_lina.model import LinaState
from wyoming_lina.model.cpu_step import QuantizedMatrix, QuantizedStep

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: robust on a busy 2-core machine

# docs/cpu.md: teacher-forced on the full-size random model (bench/bench_cpu.py --only agreement,
# 6 seeds x 120 steps) the quantized step agrees with float32 on 87.8% of top-1 tokens (worst seed
# 84.2%) with a median relative logits error of 4.6%; bf16 weights (what the GPU serves) 91.7%
# and 3.0%. These bounds sit below the measured values by the spread between seeds, and well
# above what a wrong layer gives (one decoder block skipped: 48% top-1, 31% median error).
FULL_SIZE_MIN_TOP1 = 0.78
FULL_SIZE_MAX_MEDIAN_REL = 0.08


def _full_size_model(lina_dir: Path):
    """bench/full_size.py's random model (the benchmarks' model): published shapes, seeded."""
    spec = importlib.util.spec_from_file_location("full_size", Path(__file__).parent.parent / "bench" / "full_size.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.random_full_size_lina(manifest=lina_dir / "full-size-keys.json")


def _teacher_forced(model, stepper, text, tokens):
    """Logits [T, V] of ``stepper`` fed ``tokens`` (BOS first) from the zero state."""
    ctx = model.encode_text(text)
    state = model.init_state(text.shape[0])
    out = []
    for t in range(tokens.shape[1]):
        logits, state = stepper(ctx, tokens[:, t], state)
        out.append(logits)
    return torch.stack(out, 1), state


def _agreement(ref: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    top1 = (ref.argmax(-1) == got.argmax(-1)).float().mean().item()
    rel = ((got - ref).norm(dim=-1) / ref.norm(dim=-1)).median().item()
    return top1, rel


def test_quantized_matrix_is_close_to_the_float_product():
    g = torch.Generator().manual_seed(0)
    for n, k, rows in [(67, 85, 1), (3584, 1024, 2), (1024, 1408, 3), (5, 64, 4)]:  # odd sizes are padded
        w = torch.randn(n, k, generator=g) / k**0.5
        x = torch.randn(rows, k, generator=g)
        y = QuantizedMatrix(w)(x)
        assert y.shape == (rows, n) and y.dtype == torch.bfloat16
        ref = x @ w.T
        rel = ((y.float() - ref).norm() / ref.norm()).item()
        # ~8-bit group-wise weights and bf16 activations: ~0.5% (per-row int8 alone is ~1%)
        assert rel < 0.012, (n, k, rows, rel)


@torch.inference_mode()
def test_fixture_model_quantized_step_agrees_and_keeps_the_state_contract(model):
    quantized = QuantizedStep(model)
    g = torch.Generator().manual_seed(3)
    text = torch.randint(3, model.config.text_vocab, (2, 12), generator=g)
    tokens = torch.cat(
        [torch.ones(2, 1, dtype=torch.long), torch.randint(3, model.config.out_vocab, (2, 40), generator=g)], 1
    )
    ref, ref_state = _teacher_forced(model, model.step, text, tokens)
    got, got_state = _teacher_forced(model, quantized.step, text, tokens)
    top1, rel = _agreement(ref, got)
    assert top1 >= 0.95 and rel < 0.02, (top1, rel)
    for a, b in zip(ref_state.layers, got_state.layers):
        for x, y in zip(a, b):
            assert x.shape == y.shape and y.dtype == torch.float32
            assert ((x - y).norm() / x.norm()).item() < 0.02

    # the state it returns is an ordinary LinaState: rows select and stack, the float32 step continues it
    ctx = model.encode_text(text)
    step_tokens = torch.tensor([5, 9])
    logits_fp, _ = model.step(ctx, step_tokens, got_state)
    logits_q, _ = quantized.step(ctx, step_tokens, got_state)
    assert _agreement(logits_fp, logits_q)[1] < 0.02
    row = got_state.select([1])
    alone, _ = quantized.step(ctx.select([1]), step_tokens[1:], row)
    both, _ = quantized.step(ctx, step_tokens, LinaState.cat([got_state.select([0]), row]))
    torch.testing.assert_close(alone[0], both[1], rtol=0, atol=1e-3 * both[1].abs().max().item())

    # the state passed in is not modified
    before = [t.clone() for layer in got_state.layers for t in layer]
    quantized.step(ctx, step_tokens, got_state)
    after = [t for layer in got_state.layers for t in layer]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@torch.inference_mode()
def test_full_size_quantized_step_agrees_with_float32(lina_dir):
    """The bound of docs/cpu.md on the published shapes (random weights), teacher-forced."""
    model = _full_size_model(lina_dir)
    quantized = QuantizedStep(model)
    g = torch.Generator().manual_seed(100)
    text = torch.randint(3, model.config.text_vocab, (1, 40), generator=g)
    tokens = torch.cat(
        [torch.ones(1, 1, dtype=torch.long), torch.randint(3, model.config.out_vocab, (1, 63), generator=g)], 1
    )
    ref, _ = _teacher_forced(model, model.step, text, tokens)
    got, _ = _teacher_forced(model, quantized.step, text, tokens)
    top1, rel = _agreement(ref[0], got[0])
    assert top1 >= FULL_SIZE_MIN_TOP1, f"top-1 agreement {top1:.3f} < {FULL_SIZE_MIN_TOP1}"
    assert rel <= FULL_SIZE_MAX_MEDIAN_REL, f"median relative logits error {rel:.4f} > {FULL_SIZE_MAX_MEDIAN_REL}"


def test_quantized_step_refuses_a_model_off_the_cpu(model):
    elsewhere = copy.deepcopy(model).to("meta")
    with pytest.raises(ValueError, match="runs on the CPU"):
        QuantizedStep(elsewhere)
