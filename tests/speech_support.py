"""Speech for the tests: clips spoken by espeak-ng, and a real Wyoming speech-to-text server
(tests/asr_server.py, pocketsphinx's bundled English model) started as a subprocess.

Both tools are installed by .ci/run: in CI a missing one fails the test, elsewhere it skips.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile

HERE = Path(__file__).resolve().parent
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "She sells sea shells by the sea shore every summer morning.",
    "Please turn on the kitchen lights and close the garage door.",
    "Tomorrow the weather will be sunny with a gentle breeze from the west.",
    "My favourite colour is green, like the leaves in spring.",
    "We should water the plants before we leave for the weekend.",
)


def require(condition: bool, what: str) -> None:
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is missing (.ci/run installs it)")
    pytest.skip(f"{what} is missing")


def espeak(text: str, rate: int = 150, pause: float = 0.3, noise: float = 0.003) -> tuple[np.ndarray, int]:
    """``text`` spoken by espeak-ng (American English) with ``pause`` seconds around it and a faint
    room noise (-50 dBFS), as a microphone records it (pocketsphinx mishears digital silence):
    float32 mono and its sample rate."""
    require(shutil.which("espeak-ng") is not None, "espeak-ng")
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", str(rate), "--stdout", text], capture_output=True, check=True
    ).stdout
    samples, sample_rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    silence = np.zeros(int(pause * sample_rate), np.float32)
    samples = np.concatenate([silence, samples, silence])
    rng = np.random.default_rng(len(text))
    return samples + rng.normal(0, noise, len(samples)).astype(np.float32), sample_rate


def write_speech(path: Path, text: str) -> Path:
    samples, rate = espeak(text)
    soundfile.write(str(path), samples, rate, subtype="PCM_16")
    return path


def write_recording(
    path: Path, sentences=SENTENCES, pause: float = 0.8, rate: int = 44100
) -> list[tuple[float, float]]:
    """A "long recording": the sentences with pauses between them, faint room noise, at ``rate``
    (stereo, as phones record). Returns where each sentence is (seconds)."""
    import soxr

    rng = np.random.default_rng(0)
    parts, where, t = [np.zeros(int(0.5 * rate), np.float32)], [], 0.5
    for sentence in sentences:
        samples, source_rate = espeak(sentence, pause=0.0, noise=0.0)
        samples = soxr.resample(samples, source_rate, rate).astype(np.float32)
        where.append((t, t + len(samples) / rate))
        parts += [samples, np.zeros(int(pause * rate), np.float32)]
        t += len(samples) / rate + pause
    mono = np.concatenate(parts)
    mono += rng.normal(0, 0.003, len(mono)).astype(np.float32)
    soundfile.write(str(path), np.stack([mono, mono * 0.9], axis=1), rate, subtype="PCM_16")
    return where


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AsrServer:
    proc: subprocess.Popen
    uri: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def heard(self) -> int:
        """How many clips it has transcribed."""
        return self.log.read_text(errors="replace").count(" -> ")


def start_asr_server(tmp: Path) -> AsrServer:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        require(False, "pocketsphinx")
    port = free_port()
    log = tmp / f"asr-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "asr_server.py"), "--uri", f"tcp://127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = AsrServer(proc, f"tcp://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the test ASR server exited:\n{log.read_text(errors='replace')}")
        if "ready" in log.read_text(errors="replace"):
            return server
        time.sleep(0.1)
    server.stop()
    pytest.fail("the test ASR server did not start")


@pytest.fixture(scope="module")
def asr_server(tmp_path_factory):
    server = start_asr_server(tmp_path_factory.mktemp("asr"))
    yield server
    server.stop()
