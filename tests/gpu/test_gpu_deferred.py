"""The step captured while the engine thread defers Triton kernels (a first start), on CUDA.

Until the warm-up thread has built the kernels, the engine thread runs the model in plain PyTorch
(``triton_support.defer_kernels_here``); ``GraphedStep`` captures those plain ops as graphs of
their own (``_plain_graphs``) instead of launching ~1,000 kernels from Python per step. Tiny
fixture model, float32, teacher-forced like tests/gpu/test_gpu_step.py: on a deferring thread the
captured plain step samples the eager plain step's token at every decision clear of a near-tie and
keeps the state within 1e-5; once the thread stops deferring, the next step replays a graph of the
kernels' step and the plain graphs are gone.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

from wyoming_lina import triton_support
from wyoming_lina.engine import EngineSettings, GenerationJob, SamplingOptions
from wyoming_lina.engine.graphed_step import GraphedStep

from .conftest import fixture_texts, requires_cuda
from .test_gpu_step import Comparison, assert_float32_agreement, phases_of_rows

pytestmark = requires_cuda


def test_plain_step_graphs_while_kernels_are_deferred(tiny_lina, tiny_voice, vec):
    t = fixture_texts(vec)
    prompt = vec["prompt_codes"][0]
    greedy = SamplingOptions(top_k=1)

    def job(text, sampling=greedy, **voice):
        return GenerationJob(text, max_frames=500, sampling=sampling, **voice)

    graphs = dataclasses.replace(EngineSettings.for_device("cuda").graphs, compile=False)
    comparison = Comparison(tiny_lina)
    comparison.step = GraphedStep(tiny_lina, graphs)

    def deferring():
        triton_support.defer_kernels_here()
        phases_of_rows(
            comparison,
            [
                (None, [job(t[0]), job(t[1], SamplingOptions(seed=1), initial_state=tiny_voice),
                        job(t[2], SamplingOptions(top_k=20, top_p=0.9, temperature=0.8, seed=2), prompt_codes=prompt)], 30),
                ([0, 2], [], 30),  # 3 rows -> 2
            ],
        )  # fmt: skip
        plain, kernels = len(comparison.step._plain_graphs), comparison.step.graph_count
        triton_support.defer_kernels_here(False)
        comparison.run(5)
        return plain, kernels

    with ThreadPoolExecutor(1) as pool:
        plain, kernels = pool.submit(deferring).result()
    assert plain == len(comparison.keys) >= 2 and kernels == 0  # deferred: plain graphs only
    assert comparison.step.graph_count == 1 and not comparison.step._plain_graphs  # then the kernels' graph
    assert_float32_agreement(comparison)
