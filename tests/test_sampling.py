"""Sampling: greedy exactness, temperature before top-k, nucleus, per-row reproducibility, and
the one rule for special tokens (PAD/BOS never, EOS not before a row's minimum frames)."""

import pytest
import torch

from wyoming_lina.engine.sampling import SamplingOptions, counter_uniform, sample_tokens
from wyoming_lina.model import BOS, EOS, N_SPECIAL_AUDIO, PAD


def run(logits, k, p=1.0, temp=1.0, seeds=None, counters=None):
    """Sample from speech-token logits [B, V]: the special tokens in front get the HIGHEST
    logits (so the rule, not luck, keeps them out); returns indices into ``logits``."""
    B = logits.shape[0]
    t = lambda v, dt: torch.full((B,), v, dtype=dt)  # noqa: E731
    seeds = seeds if seeds is not None else torch.arange(B)
    counters = counters if counters is not None else torch.zeros(B, dtype=torch.long)
    specials = torch.full((B, N_SPECIAL_AUDIO), 100.0)
    specials[:, EOS] = float("-inf")  # EOS allowed (min_frames 0) but never likely here
    full = torch.cat([specials, logits], dim=1)
    got = sample_tokens(
        full, t(k, torch.long), t(p, torch.float), t(temp, torch.float), seeds, counters, k, t(0, torch.long)
    )
    return got - N_SPECIAL_AUDIO


def test_greedy_is_argmax():
    logits = torch.randn(5, 67, generator=torch.Generator().manual_seed(0))
    assert torch.equal(run(logits, 1), logits.argmax(-1))
    assert torch.equal(run(logits, 50, temp=0.0), logits.argmax(-1))


def test_only_top_k_tokens_are_ever_sampled():
    logits = torch.randn(1, 100, generator=torch.Generator().manual_seed(1)).repeat(400, 1)
    allowed = set(logits[0].topk(3).indices.tolist())
    got = run(logits, 3, seeds=torch.arange(400))
    assert set(got.tolist()) == allowed


def test_temperature_applies_before_the_top_k_threshold():
    """Upstream compares tempered logits with the untempered k-th value; we keep exactly top k."""
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]]).repeat(2000, 1)
    got = run(logits, 2, temp=3.0, seeds=torch.arange(2000))
    assert set(got.tolist()) == {0, 1}
    p0 = (got == 0).float().mean().item()
    expected = torch.softmax(torch.tensor([4.0, 3.0]) / 3.0, 0)[0].item()  # 0.583
    assert abs(p0 - expected) < 0.04


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    got = run(logits, 4, p=0.7, seeds=torch.arange(2000))
    assert set(got.tolist()) == {0, 1}
    got = run(logits, 4, p=0.4, seeds=torch.arange(2000))
    assert set(got.tolist()) == {0}


def test_distribution_matches_softmax():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).repeat(5000, 1)
    got = run(logits, 3, seeds=torch.arange(5000))
    freq = torch.bincount(got, minlength=3).float() / 5000
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1]), atol=0.03)


def test_row_randomness_is_independent_of_the_batch():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 67, generator=gen)
    seeds = torch.tensor([11, 12, 13, 14, 15, 16])
    counters = torch.tensor([0, 3, 5, 7, 9, 1])
    together = run(logits, 40, seeds=seeds, counters=counters)
    alone = torch.cat(
        [run(logits[i : i + 1], 40, seeds=seeds[i : i + 1], counters=counters[i : i + 1]) for i in range(6)]
    )
    assert torch.equal(together, alone)


def test_counter_uniform_is_uniform_and_deterministic():
    u = counter_uniform(torch.arange(20000), torch.zeros(20000, dtype=torch.long))
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01
    assert torch.equal(u, counter_uniform(torch.arange(20000), torch.zeros(20000, dtype=torch.long)))
    assert not torch.equal(u[:100], counter_uniform(torch.arange(100), torch.ones(100, dtype=torch.long)))


@pytest.mark.parametrize("kwargs", [{"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}, {"temperature": -1}])
def test_invalid_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        SamplingOptions(**kwargs)


def test_pad_and_bos_are_never_sampled_and_eos_waits_for_min_frames():
    B, V = 512, 4099
    logits = torch.randn(B, V, generator=torch.Generator().manual_seed(3))
    logits[:, PAD] = logits[:, BOS] = logits[:, EOS] = 50.0  # the model "wants" them most
    ones = torch.ones(B)
    counters = torch.arange(B) % 40
    min_frames = torch.full((B,), 20)
    for k, temp in ((1, 1.0), (100, 1.0), (100, 3.0), (4099, 1.0)):
        got = sample_tokens(logits, torch.full((B,), k), ones, ones * temp, torch.arange(B), counters, k, min_frames)
        assert not ((got == PAD) | (got == BOS)).any()
        early = counters < min_frames
        assert not (got[early] == EOS).any()  # before the floor: never EOS, however likely
        assert (got[~early] == EOS).all()  # from the floor on it is allowed (and here certain)
