"""The chunked GLA recurrence (a prompt's prefill on a CPU, and on CUDA before Triton's kernels are
built) computes what the per-frame loop computes, for every length, batch, decay and chunk size.

Tolerance: both forms sum the same float32 terms in a different order; against a float64 run each
is off by ~2e-7 of the output's largest value (measured, up to 375 frames, decays down to -8 per
frame). 1e-5 of that scale leaves a wide margin, while a real mistake (a frame dropped or added
twice, a decay applied on the wrong side of a chunk boundary) moves outputs by 1e-2 or more."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wyoming_lina.model.kernels import CHUNK, chunked_gla, naive_gla

TOLERANCE = 1e-5  # of the largest output (or state) value, see above


def inputs(batch: int, frames: int, lowest_decay: float, seed: int = 0):
    """q, k, v, g, an initial state (heads 3, dk 16, dv 8); g uniform in [lowest_decay, 0]."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, frames, 3, 16, generator=gen) for _ in range(2))
    v = torch.randn(batch, frames, 3, 8, generator=gen)
    g = lowest_decay * torch.rand(batch, frames, 3, 16, generator=gen)
    return q, k, v, g, torch.randn(batch, 3, 16, 8, generator=gen)


def assert_near(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, atol=TOLERANCE * scale, rtol=0)


@pytest.mark.parametrize("chunk", [1, 4, CHUNK, 64])
@pytest.mark.parametrize("offset", [-1, 0, 1])
@pytest.mark.parametrize("lowest_decay", [-0.3, -8.0])
def test_chunked_equals_the_loop_around_chunk_boundaries(chunk, offset, lowest_decay):
    frames = max(1, chunk + offset)
    q, k, v, g, s0 = inputs(2, frames, lowest_decay)
    out, state = chunked_gla(q, k, v, g, s0, scale=0.25, chunk=chunk)
    ref_out, ref_state = naive_gla(q, k, v, g, s0, scale=0.25)
    assert_near(out, ref_out)
    assert_near(state, ref_state)


@pytest.mark.parametrize("lowest_decay", [0.0, -0.3, -2.0, -8.0])
@pytest.mark.parametrize("chunk", [8, CHUNK, 64])
def test_a_five_second_prompt_with_strong_decays(lowest_decay, chunk):
    """375 frames (a 5 s prompt), float64 run of the recurrence as the truth: exp(-cumsum)
    would overflow float32 here (-8 per frame), the chunked form stays as close as the loop."""
    q, k, v, g, s0 = inputs(2, 375, lowest_decay, seed=1)
    out, state = chunked_gla(q, k, v, g, s0, scale=0.25, chunk=chunk)
    truth_out, truth_state = naive_gla_float64(q, k, v, g, s0, scale=0.25)
    assert torch.isfinite(out).all() and torch.isfinite(state).all()
    assert_near(out, truth_out.float())
    assert_near(state, truth_state.float())
    loop_out, _ = naive_gla(q, k, v, g, s0, scale=0.25)
    chunked_error = (out.double() - truth_out).abs().max()
    assert chunked_error <= 3 * (loop_out.double() - truth_out).abs().max() + 1e-7


def naive_gla_float64(q, k, v, g, s0, scale):
    q, k, v, g, state = (t.double() for t in (q, k, v, g, s0))
    outs = []
    for t in range(q.shape[1]):
        state = state * g[:, t, :, :, None].exp() + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, state))
    return torch.stack(outs, 1), state


def test_gradients_equal_the_loops():
    """Voice tuning (initial-state tuning) backpropagates through the recurrence."""
    gen = torch.Generator().manual_seed(2)
    q, k, v, _, s0 = inputs(2, 70, 0.0, seed=2)
    g = F.logsigmoid(4 * torch.randn(q.shape, generator=gen))  # down to about -12
    weights = torch.linspace(-1, 1, v.shape[-1])

    def grads(recurrence):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v, g, s0)]
        out, state = recurrence(*leaves, scale=0.25)
        ((out * weights).sum() + state.pow(2).sum()).backward()
        return [t.grad for t in leaves]

    for ours, ref in zip(grads(lambda *a, scale: chunked_gla(*a, scale, chunk=16)), grads(naive_gla)):
        assert_near(ours, ref)


def test_chunk_must_be_a_power_of_two():
    q, k, v, g, s0 = inputs(1, 5, -1.0)
    with pytest.raises(ValueError, match="power of two"):
        chunked_gla(q, k, v, g, s0, scale=0.25, chunk=24)
