"""Check that the running Python environment is the image's and that the server runs in it.

    python bench/image_env_check.py [--fixtures ../shared/fixtures] [--allow-differ 'nvidia-*']

1. every package in requirements/image.txt is installed at exactly its pinned version (and the
   Python is 3.12, the image's);
2. Triton: on a CUDA machine it must compile AND launch a kernel (the server's start-up check,
   wyoming_lina.triton_support.check_triton); without a GPU it must compile the kernel for
   sm_90 and build a C extension as it builds its launcher. Either way, with the C compiler
   taken away (CC=/nonexistent) the check must fail and say to install one;
3. the server, started through the image's entry point (docker/entrypoint.sh) with the data dir
   and the health-check file from the environment as the image sets them, on the fixture
   models: the health check (no URI given) passes, one request is spoken, `voice list` through
   the entry point sees the voice the server made, and SIGTERM stops it with exit code 0. On
   CUDA its log must show Triton's kernel check passing and the model loaded on CUDA.

CI runs it in a fresh venv made from requirements/image.txt (script/check-image); on a GPU
host it is the check that the image's environment runs the CUDA path. Exit 0 when all passed.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS: list[tuple[bool, str]] = []


def report(ok: bool, what: str) -> bool:
    RESULTS.append((ok, what))
    print(f"[{'ok' if ok else 'FAIL'}] {what}", flush=True)
    return ok


# --- 1. the pins ----------------------------------------------------------------------------------
def check_pins(requirements: Path, allow_differ: list[str]) -> None:
    report(sys.version_info[:2] == (3, 12), f"Python {sys.version.split()[0]} (the image has 3.12)")
    wrong, tolerated = [], []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, version = line.split("==")
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            entry = f"{name} {installed} (pinned {version})"
            (tolerated if any(fnmatch.fnmatch(name, p) for p in allow_differ) else wrong).append(entry)
    report(
        not wrong,
        f"packages at their pinned versions ({requirements.name})" + (f": differ: {', '.join(wrong)}" if wrong else ""),
    )
    if tolerated:
        print(f"       allowed to differ here: {', '.join(tolerated)}", flush=True)


# --- 2. Triton ------------------------------------------------------------------------------------
_WITHOUT_COMPILER = """
import json, sys
from wyoming_lina import triton_support as t
if sys.argv[1] == "cuda":
    status = t.check_triton("cuda")
    print(json.dumps({"usable": status.usable, "detail": status.detail, "advice": status.advice}))
else:
    import triton
    try:
        t.compile_only_check()
        error = None
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
    status = t.decide(triton.__version__, t.find_c_compiler(), t.python_header().is_file(), error, error is None)
    print(json.dumps({"usable": status.usable, "detail": status.detail, "advice": status.advice}))
"""


def check_triton(cuda: bool) -> None:
    import json

    from wyoming_lina import triton_support

    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton-cache-")  # really compile
    if cuda:
        status = triton_support.check_triton("cuda")
        report(status.usable, f"CUDA: {status.detail}" + ("" if status.usable else f" -- {status.advice}"))
    else:
        try:
            for step in triton_support.compile_only_check():
                report(True, f"no GPU: {step}")
        except Exception as err:  # noqa: BLE001 (reported)
            report(False, f"no GPU: Triton could not compile: {type(err).__name__}: {err}")
    env = {**os.environ, "CC": "/nonexistent/cc", "TRITON_CACHE_DIR": tempfile.mkdtemp(prefix="triton-cache-")}
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_COMPILER, "cuda" if cuda else "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    try:
        outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report(False, f"without a C compiler: the check itself failed:\n{proc.stderr[-2000:]}")
        return
    diagnosed = not outcome["usable"] and "C compiler" in outcome["advice"]
    report(
        diagnosed, f"without a C compiler the check fails and says so: {outcome['detail'][:160]} -- {outcome['advice']}"
    )


# --- 3. the server through the entry point ----------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _speak(port: int, text: str) -> int:
    from wyoming.audio import AudioChunk, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.error import Error
    from wyoming.tts import Synthesize

    samples = 0
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=text).event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 120)
            if event is None or AudioStop.is_type(event.type):
                return samples
            if Error.is_type(event.type):
                raise RuntimeError(Error.from_event(event).text)
            if AudioChunk.is_type(event.type):
                samples += len(AudioChunk.from_event(event).audio) // 2


def check_server(fixtures: Path, cuda: bool, startup_timeout: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="image-check-"))
    data, uri_file, log_path = work / "data", work / "listen.uri", work / "server.log"
    port = _free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "WYOMING_LINA_DATA_DIR": str(data),  # as the image's ENV lines set them
        "WYOMING_LINA_URI_FILE": str(uri_file),
        "TRITON_CACHE_DIR": str(work / "triton"),
        "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    entrypoint = ["sh", str(REPO / "docker" / "entrypoint.sh")]
    # a voice added as the README adds one in the container: no --data-dir, the image's variable
    state = fixtures / "lina-tiny" / "speaker_state.safetensors"
    added = subprocess.run(
        [*entrypoint, "voice", "add", "fixture", "--state", str(state)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if not report(
        added.returncode == 0 and (data / "voices" / "fixture").is_dir(),
        f"`voice add` through the entry point wrote into {data}",
    ):
        print(added.stdout + added.stderr, flush=True)
    options = [
        "--uri", f"tcp://127.0.0.1:{port}",
        "--device", "cuda" if cuda else "cpu",
        "--lina-checkpoint", str(fixtures / "lina-tiny" / "model.ckpt"),
        "--codec-checkpoint", str(fixtures / "wavtokenizer-tiny" / "model.ckpt"),
        "--codec-config", str(fixtures / "wavtokenizer-tiny" / "config.yaml"),
        "--tokenizer", str(fixtures / "lina-tiny" / "bpe256.json"),
        "--voice", "fixture", "--seed", "7", "--max-batch", "8", "--max-sentence-seconds", "0.4",
    ]  # fmt: skip
    started = time.monotonic()
    with open(log_path, "wb") as log:
        server = subprocess.Popen([*entrypoint, *options], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        healthy = False
        while time.monotonic() - started < startup_timeout and server.poll() is None:
            probe = subprocess.run(
                [sys.executable, "-m", "wyoming_lina.server.healthcheck"], env=env, capture_output=True, timeout=60
            )
            if probe.returncode == 0:
                healthy = True
                break
            time.sleep(1.0)
        report(
            healthy,
            f"server started through docker/entrypoint.sh; the health check (no URI) passed after {time.monotonic() - started:.0f} s",
        )
        if not healthy:
            return
        # the port answers describe while the model still loads: wait until it speaks
        while time.monotonic() - started < startup_timeout and server.poll() is None:
            if "ready: speaking" in log_path.read_text(errors="replace"):
                break
            time.sleep(0.5)
        log_text = log_path.read_text(errors="replace")
        report(
            "ready: speaking" in log_text,
            f"the model loaded and the server speaks after {time.monotonic() - started:.0f} s",
        )
        if cuda:
            report(
                "compiled and launched a test kernel" in log_text and "TRITON CANNOT" not in log_text,
                "the server's Triton check passed on CUDA",
            )
            report("loaded the model and codec on cuda" in log_text, "the model and codec run on CUDA")
        try:
            samples = asyncio.run(_speak(port, "Hello there. How are you today?"))
            report(samples > 0, f"one request spoken: {samples / 24000:.2f} s of audio")
        except Exception as err:  # noqa: BLE001 (reported)
            report(False, f"the request failed: {type(err).__name__}: {err}")
        listed = subprocess.run(
            [*entrypoint, "voice", "list"], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )
        report(
            listed.returncode == 0 and re.search(r"^fixture\s.*\sok$", listed.stdout, re.M) is not None,
            f"`voice list` through the entry point sees the server's voice, usable, in {data}",
        )
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        report(code == 0, f"SIGTERM stopped the server with exit code {code}")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if not all(ok for ok, _ in RESULTS):
            print(f"--- server log ({log_path}) ---\n{log_path.read_text(errors='replace')[-6000:]}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requirements", type=Path, default=REPO / "requirements" / "image.txt")
    default_fixtures = os.environ.get("WYOMING_LINA_FIXTURES", REPO.parent / "shared" / "fixtures")
    parser.add_argument("--fixtures", type=Path, default=Path(default_fixtures))
    parser.add_argument(
        "--allow-differ", action="append", default=[], metavar="GLOB", help="packages allowed another version here"
    )
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    print(
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), {'GPU: ' + torch.cuda.get_device_name(0) if cuda else 'no GPU'}",
        flush=True,
    )
    check_pins(args.requirements, args.allow_differ)
    check_triton(cuda)
    check_server(args.fixtures.resolve(), cuda, args.startup_timeout)
    failed = [what for ok, what in RESULTS if not ok]
    print(f"image check: {len(RESULTS) - len(failed)} ok, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
