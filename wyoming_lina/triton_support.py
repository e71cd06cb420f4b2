"""Whether Triton can be used: the model's and the codec's CUDA kernels both ask.

Importing triton is not enough. The first time Triton runs a kernel it builds a small C launcher
with the system's C compiler and Python's headers, and finds the driver's ``libcuda.so.1``; an
image without a compiler imports triton fine and fails at the first request. So on CUDA the
server calls :func:`check_triton` once at start-up: it compiles and launches a tiny kernel and
checks its result. If that fails it says why and what to install, and every Triton user
(the fused GLA step, the GEMV, fla-core, ``torch.compile``, the codec kernels) falls back to
plain PyTorch, loudly, instead of failing at the first request.

The decision and the advice are pure functions (:func:`decide`, :func:`advice_for`), tested
without a GPU.

A first start builds every kernel (seconds each; fla-core's prefill kernels also autotune, a
minute or more), and a thread that builds one waits for it. So the engine thread defers them
(:func:`defer_kernels_here`) until the warm-up thread has built them: meanwhile it runs the same
model in plain PyTorch (cuBLAS GEMMs, the plain recurrence, the codec's PyTorch convs), which
needs nothing built and is faster than real time on a GPU.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TritonStatus:
    usable: bool
    detail: str  # what was found (the version and compiler), or what went wrong
    advice: str = ""  # what to install or set, when not usable


_checked: TritonStatus | None = None  # set by check_triton(); None: not checked in this process


@functools.lru_cache(maxsize=1)
def _importable() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


_this_thread = threading.local()  # .deferred: this thread runs plain PyTorch for now


def defer_kernels_here(deferred: bool = True) -> None:
    """On the calling thread only: Triton kernels are (or, with False, no longer are) deferred."""
    _this_thread.deferred = deferred


def kernels_deferred() -> bool:
    """Whether the calling thread defers Triton kernels (never inside ``torch.compile``: a
    compiled step is built and run only where the kernels are built)."""
    return not torch.compiler.is_compiling() and getattr(_this_thread, "deferred", False)


def triton_available() -> bool:
    """Whether Triton kernels may run here: it imports (it ships with CUDA builds of torch, not
    CPU ones), when :func:`check_triton` ran in this process it compiled and launched a kernel,
    and this thread does not defer them (:func:`defer_kernels_here`). Call it only for CUDA
    work: it imports triton, which the CPU path never does."""
    if kernels_deferred():
        return False
    if _checked is not None:
        return _checked.usable
    return _importable()


# --- the decision (pure) ---------------------------------------------------------------------
def find_c_compiler(environ: dict | None = None, which=shutil.which) -> str | None:
    """The compiler Triton would use: ``$CC``, else gcc, else clang (as triton.runtime.build);
    None when that program is not there."""
    environ = os.environ if environ is None else environ
    if environ.get("CC"):
        return which(environ["CC"])
    return which("gcc") or which("clang")


def python_header() -> Path:
    scheme = sysconfig.get_default_scheme()
    if scheme == "posix_local":  # Debian's scheme; Triton reads the headers of posix_prefix
        scheme = "posix_prefix"
    return Path(sysconfig.get_paths(scheme=scheme)["include"]) / "Python.h"


def advice_for(error: str) -> str:
    """What to install or set, from the text of the error Triton raised."""
    text = error.lower()
    if "failed to find c compiler" in text or "no such file or directory: 'gcc'" in text or "c compiler" in text:
        return "install a C compiler (Debian/Ubuntu: apt-get install gcc libc6-dev) or point CC at one"
    if "python.h" in text:
        return "install the Python headers (Debian/Ubuntu: apt-get install python3-dev)"
    if "libcuda" in text:
        return (
            "the NVIDIA driver's libcuda.so.1 is not visible: run the container with --gpus all (NVIDIA "
            "container toolkit), or set TRITON_LIBCUDA_PATH to the folder holding libcuda.so.1"
        )
    if "ptxas" in text:
        return "Triton's ptxas failed: use the Triton that comes with this torch (requirements/image.txt)"
    if "permission denied" in text or "read-only file system" in text:
        return "Triton cannot write its cache: set TRITON_CACHE_DIR to a writable folder"
    if "no module named" in text:
        return "install Triton (it comes with torch's CUDA wheels on Linux; see requirements/image.txt)"
    return "see the error above; the environment that runs Triton is pinned in requirements/image.txt"


def decide(
    version: str | None,
    compiler: str | None,
    header_present: bool,
    launch_error: str | None,
    result_ok: bool,
) -> TritonStatus:
    """Usable only when a kernel was compiled, launched and computed the right thing."""
    if version is None:
        error = launch_error or "No module named 'triton'"
        return TritonStatus(False, f"cannot import triton ({error})", advice_for(error))
    if launch_error is not None:
        # name the most likely cause first: what Triton needs beside itself
        if compiler is None:
            return TritonStatus(
                False, f"Triton {version} found no C compiler ({launch_error})", advice_for("c compiler")
            )
        if not header_present:
            return TritonStatus(
                False, f"Triton {version}: Python.h is missing ({launch_error})", advice_for("Python.h")
            )
        return TritonStatus(
            False, f"Triton {version} could not compile or launch a kernel: {launch_error}", advice_for(launch_error)
        )
    if not result_ok:
        return TritonStatus(
            False, f"Triton {version} launched a test kernel that computed a wrong result", advice_for("")
        )
    return TritonStatus(True, f"Triton {version} compiled and launched a test kernel (C compiler: {compiler})")


# --- the checks --------------------------------------------------------------------------------
def _add_one_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def add_one(x_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) + 1.0, mask=mask)

    return add_one


def probe(device: str = "cuda") -> TritonStatus:
    """Compile and launch a tiny kernel on ``device`` and check what it computed."""
    try:
        import triton
    except Exception as err:  # ImportError, or a broken install
        return decide(None, None, False, f"{type(err).__name__}: {err}", False)
    import torch

    compiler, header = find_c_compiler(), python_header().is_file()
    try:
        with torch.cuda.device(torch.device(device)):
            x = torch.arange(300, dtype=torch.float32, device=device)
            _add_one_kernel()[(3,)](x, 300, BLOCK=128)
            ok = bool(torch.equal(x.cpu(), torch.arange(300, dtype=torch.float32) + 1))
    except Exception as err:  # CalledProcessError, RuntimeError, AssertionError from the driver...
        return decide(
            triton.__version__, compiler, header, " ".join(f"{type(err).__name__}: {err}".split())[:500], False
        )
    return decide(triton.__version__, compiler, header, None, ok)


def check_triton(device: str = "cuda", run_probe: Callable[[str], TritonStatus] | None = None) -> TritonStatus:
    """Run :func:`probe` (or ``run_probe``) once per process, log the outcome, and make
    :func:`triton_available` follow it. On failure everything that would run Triton uses plain
    PyTorch instead."""
    global _checked
    if _checked is not None:
        return _checked
    started = time.monotonic()
    status = (run_probe or probe)(device)
    _checked = status
    if status.usable:
        _LOGGER.info("%s in %.1f s", status.detail, time.monotonic() - started)
    else:
        _LOGGER.warning(
            "TRITON CANNOT RUN KERNELS HERE: %s. Fix: %s. Falling back to plain PyTorch (no fused "
            "kernels, no torch.compile): generation will be several times slower.",
            status.detail,
            status.advice,
        )
    return status


def compile_only_check(arch: int = 90) -> list[str]:
    """What can be checked without a GPU (CI, an image build): Triton compiles the test kernel
    for ``sm_<arch>`` (its bundled ptxas), and builds a C extension the way it builds its
    launcher (the C compiler and Python.h). Returns the steps done; raises on failure."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.build import compile_module_from_src

    source = ASTSource(
        fn=_add_one_kernel(), signature={"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}, constexprs={"BLOCK": 128}
    )
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32))
    done = [
        f"Triton {triton.__version__} compiled the test kernel for sm_{arch} ({len(kernel.asm['cubin'])} bytes of cubin)"
    ]
    module = compile_module_from_src(
        "#include <Python.h>\n"
        'static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "wyoming_lina_cc_check", NULL, -1, NULL};\n'
        "PyMODINIT_FUNC PyInit_wyoming_lina_cc_check(void) { return PyModule_Create(&def); }\n",
        "wyoming_lina_cc_check",
    )
    done.append(
        f"built a C extension as Triton builds its launcher (C compiler: {find_c_compiler()}, {module.__file__})"
    )
    return done
