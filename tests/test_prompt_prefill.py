"""A prompt voice's prefill on a CPU whose step is quantized runs its products in bfloat16
(engine/prefill.py ``bf16_prompts``); with ``cpu_quant`` none it is the float32 model's, exactly.

Fixture model: the bfloat16 prefill moves the state a little (1.9% at most here; 0.7% on the
full-size random model, whose next logits move by 0.5% where a quantized step adds ~5% at every
frame, docs/cpu.md) but does move it (the flag is in effect), returns float32 tensors the step
continues from, and the runner turns it on for ``cpu_quant`` q8 only.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from wyoming_lina.engine import EngineSettings, GenerationJob, SamplingOptions
from wyoming_lina.engine.cpu_speed import bf16_prompts_faster
from wyoming_lina.engine.prefill import Prefiller
from wyoming_lina.engine.runner import PlainRunner
from wyoming_lina.model import BOS, N_SPECIAL_AUDIO


@pytest.fixture(scope="module")
def vec(lina_dir):
    return load_file(str(lina_dir / "vectors.safetensors"))


def prompt_jobs(vec) -> list[GenerationJob]:
    ids = vec["text_ids"][0].tolist()
    prompt = vec["prompt_codes"][0]
    greedy = SamplingOptions(top_k=1)
    return [
        GenerationJob(ids, max_frames=30, sampling=greedy, prompt_codes=prompt),
        GenerationJob(ids[:12] + ids[-1:], max_frames=30, sampling=greedy, prompt_codes=prompt),
    ]


def prefill(model, jobs, bf16: bool):
    return Prefiller(model, pad=True, max_batch=8, cache_size=4, bf16_prompts=bf16).prepare(jobs)[0]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@torch.inference_mode()
def test_float32_prompt_prefill_is_the_models_own(model, vec):
    jobs = prompt_jobs(vec)
    batch = prefill(model, jobs, bf16=False)
    for job, row in zip(jobs, range(len(jobs))):
        codes = job.prompt_codes.long() + N_SPECIAL_AUDIO
        inputs = torch.cat([torch.tensor([BOS]), codes[:-1]])[None]  # BOS, then the codes but the last
        ctx = model.encode_text(torch.tensor([job.text_ids]))
        encoded, state = model.encode_audio(inputs, model.init_state(1))
        want = model.prefill_from_encoded(ctx, encoded, state)
        for got_layer, want_layer in zip(batch.state.select([row]).layers, want.layers):
            for got, expected in zip(got_layer, want_layer):
                if expected is not None:
                    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@torch.inference_mode()
def test_bfloat16_prompt_prefill_stays_close_and_float32(model, vec):
    jobs = prompt_jobs(vec)
    exact, lower = prefill(model, jobs, bf16=False), prefill(model, jobs, bf16=True)
    errors = []
    for exact_layer, lower_layer in zip(exact.state.layers, lower.state.layers):
        for a, b in zip(lower_layer, exact_layer):
            if b is not None:
                assert a.dtype == torch.float32 and a.shape == b.shape
                errors.append(rel(a, b))
    print(f"bfloat16 prompt prefill: state off by up to {max(errors):.2e}")
    assert 0 < max(errors) < 5e-2, errors  # bfloat16 did run; it moved the state by 1.9% here at most
    assert torch.equal(lower.next_tokens, exact.next_tokens)
    logits_exact, _ = model.step(exact.ctx, exact.next_tokens, exact.state)
    logits_lower, _ = model.step(lower.ctx, lower.next_tokens, lower.state)
    assert rel(logits_lower, logits_exact) < 2e-2
    assert torch.equal(logits_lower.argmax(-1), logits_exact.argmax(-1))


def test_the_runner_uses_bfloat16_prompts_only_with_the_quantized_step(model):
    assert PlainRunner(model, EngineSettings(cpu_quant="q8")).prefill.bf16_prompts
    assert not PlainRunner(model, EngineSettings(cpu_quant="none")).prefill.bf16_prompts


@torch.inference_mode()
def test_a_cpu_where_bfloat16_is_no_faster_keeps_prompts_float32(model, vec):
    """The start-up times a prompt's encoder pass both ways (``bf16_prompts_faster``) and, where
    bfloat16 is not the required 20% faster, the prefiller goes back to float32: its prefill is
    then the float32 one exactly, the encoder passes cached in bfloat16 dropped."""
    assert bf16_prompts_faster(model, frames=8, min_gain=-100.0)  # any time at all passes this bar
    assert not bf16_prompts_faster(model, frames=8, min_gain=1.0)  # no time at all would pass this one
    jobs = prompt_jobs(vec)
    prefiller = Prefiller(model, pad=True, max_batch=8, cache_size=4, bf16_prompts=True)
    prefiller.prepare(jobs)
    assert len(prefiller.prompts) == 1 and prefiller.prompts.bf16
    prefiller.keep_prompts_float32()
    assert not prefiller.bf16_prompts and len(prefiller.prompts) == 0 and not prefiller.prompts.bf16
    got, exact = prefiller.prepare(jobs)[0], prefill(model, jobs, bf16=False)
    for got_layer, exact_layer in zip(got.state.layers, exact.state.layers):
        for a, b in zip(got_layer, exact_layer):
            if b is not None:
                assert torch.equal(a, b)
