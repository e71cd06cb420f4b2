"""The start-up decision about Triton on CUDA: what the check concludes from what it found, the
advice it gives for the errors Triton really raises, and that a failed check turns every
Triton user off. (The check itself compiles and launches a kernel: bench/image_env_check.py
runs it on a GPU, and its compile-only half in CI's image environment.)"""

from __future__ import annotations

import pytest

from wyoming_lina import triton_support
from wyoming_lina.triton_support import TritonStatus, advice_for, decide, find_c_compiler

# Messages as Triton 3.6 and the dynamic loader word them.
NO_COMPILER = "RuntimeError: Failed to find C compiler. Please specify via CC environment variable or set triton.knobs.build.impl."
NO_HEADER = "CalledProcessError: /tmp/tmpx/cuda_utils.c:1:10: fatal error: Python.h: No such file or directory"
NO_LIBCUDA = "AssertionError: libcuda.so cannot found!\nPossible files are located at []."


def test_a_kernel_that_ran_and_computed_right_is_usable():
    status = decide("3.6.0", "/usr/bin/gcc", True, None, True)
    assert status.usable and "3.6.0" in status.detail and "/usr/bin/gcc" in status.detail


@pytest.mark.parametrize(
    "version, compiler, header, error, ok, words, advice",
    [
        (
            None,
            None,
            False,
            "ModuleNotFoundError: No module named 'triton'",
            False,
            "cannot import triton",
            "install Triton",
        ),
        ("3.6.0", None, True, NO_COMPILER, False, "no C compiler", "apt-get install gcc"),
        ("3.6.0", "/usr/bin/gcc", False, NO_HEADER, False, "Python.h is missing", "python3-dev"),
        ("3.6.0", "/usr/bin/gcc", True, NO_LIBCUDA, False, "libcuda.so cannot found", "--gpus all"),
        ("3.6.0", "/usr/bin/gcc", True, None, False, "wrong result", "requirements/image.txt"),
    ],
)
def test_each_failure_says_why_and_what_to_install(version, compiler, header, error, ok, words, advice):
    status = decide(version, compiler, header, error, ok)
    assert not status.usable
    assert words in status.detail and advice in status.advice


@pytest.mark.parametrize(
    "error, words",
    [
        (NO_COMPILER, "C compiler"),
        (NO_HEADER, "Python headers"),
        (NO_LIBCUDA, "TRITON_LIBCUDA_PATH"),
        ("PermissionError: [Errno 13] Permission denied: '/home/lina/.triton/cache'", "TRITON_CACHE_DIR"),
        ("RuntimeError: PTX assembly failed: ptxas fatal", "ptxas"),
    ],
)
def test_advice_follows_the_error(error, words):
    assert words in advice_for(error)


def test_the_compiler_is_found_as_triton_finds_it():
    assert find_c_compiler({"CC": "/opt/cc"}, which={"/opt/cc": "/opt/cc", "gcc": "/usr/bin/gcc"}.get) == "/opt/cc"
    assert (
        find_c_compiler({"CC": "/nonexistent/cc"}, which={"gcc": "/usr/bin/gcc"}.get) is None
    )  # Triton uses CC as given
    found = {"gcc": None, "clang": "/usr/bin/clang"}
    assert find_c_compiler({}, which=found.get) == "/usr/bin/clang"
    assert find_c_compiler({}, which=lambda name: None) is None


@pytest.fixture
def unchecked(monkeypatch):
    """This process as if Triton had not been checked yet (the check's outcome is undone after)."""
    monkeypatch.setattr(triton_support, "_checked", None)


def _gpu_without_a_compiler(device: str) -> TritonStatus:
    """What the probe finds on a GPU host whose image has no C compiler (no GPU here)."""
    return decide("3.6.0", None, True, NO_COMPILER, False)


def fused_step_on_cuda() -> bool:
    """Whether a CUDA model would take the one-kernel Triton GLA step (the decision
    ``LinaModel.fuse_projections`` makes, on a CPU model given the device type)."""
    from wyoming_lina.model.lina import fused_kernels_apply

    return fused_kernels_apply("cuda")


def test_a_failed_check_is_logged_once_loudly_and_turns_every_triton_user_off(unchecked, caplog):
    calls = []

    def probe(device):
        calls.append(device)
        return _gpu_without_a_compiler(device)

    with caplog.at_level("WARNING", logger="wyoming_lina.triton_support"):
        first = triton_support.check_triton("cuda:0", probe)
        second = triton_support.check_triton("cuda:0", probe)
    assert first is second and calls == ["cuda:0"]
    (record,) = caplog.records
    assert "TRITON CANNOT RUN KERNELS HERE" in record.message and "apt-get install gcc" in record.message
    assert "Falling back to plain PyTorch" in record.message
    assert not triton_support.triton_available()
    assert not fused_step_on_cuda()  # the plain GLA step, no Triton kernel


def test_a_passed_check_keeps_the_triton_kernels(unchecked):
    assert triton_support.check_triton("cuda", lambda device: decide("3.6.0", "/usr/bin/gcc", True, None, True)).usable
    assert triton_support.triton_available()
    assert fused_step_on_cuda()


# --- the engine thread defers kernels while the warm-up thread builds them --------------------
def test_a_thread_that_defers_kernels_runs_the_step_in_plain_pytorch(lina_dir):
    """A model prepared for CUDA (the one-kernel GLA step, the small-batch GEMV) steps in plain
    PyTorch on a thread that defers its kernels, with the plain model's result; other threads do
    not defer. (On this CPU build without Triton, a kernel call would raise at once.)"""
    import threading

    import torch

    from wyoming_lina.model import BOS, load_lina
    from wyoming_lina.model.gla import GatedLinearAttention

    plain = load_lina(lina_dir / "model.ckpt").fuse_projections()
    prepared = load_lina(lina_dir / "model.ckpt").fuse_projections()
    for module in prepared.modules():  # as fuse_projections leaves it on CUDA with Triton
        if hasattr(module, "small_batch_gemv"):
            module.small_batch_gemv = True
        if isinstance(module, GatedLinearAttention):
            module.fused_step = True

    def step(model):
        with torch.inference_mode():
            ctx = model.encode_text(torch.tensor([[5, 6, 7, 8]]))
            state = model.init_state(1)
            return model.step_in_place(ctx, torch.tensor([BOS]), state), state

    with pytest.raises(
        (ImportError, RuntimeError, ValueError)
    ):  # not deferred: the prepared model calls its Triton kernels
        step(prepared)
    results, seen = {}, {}

    def deferring():
        triton_support.defer_kernels_here()
        seen["deferred"] = triton_support.kernels_deferred()
        results["prepared"] = step(prepared)
        triton_support.defer_kernels_here(False)
        seen["after"] = triton_support.kernels_deferred()

    thread = threading.Thread(target=deferring)
    thread.start()
    thread.join()
    assert seen == {"deferred": True, "after": False}
    assert not triton_support.kernels_deferred()  # this thread never deferred
    logits, state = results["prepared"]
    want_logits, want_state = step(plain)
    torch.testing.assert_close(logits, want_logits)
    for got, want in zip(state.layers, want_state.layers):
        for a, b in zip(got, want):
            if a is not None:
                torch.testing.assert_close(a, b)
