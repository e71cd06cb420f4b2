"""The real server with its voice studio (--http-port), on loopback with the fixture models on CPU,
and a small HTTP client for its API (aiohttp, like any automation would use)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from fixture_support import model_args
from speech_support import free_port
from test_server_e2e import Server, add_fixture_voice

STARTUP_TIMEOUT = 90.0


@dataclass
class StudioServer(Server):
    http_port: int = 0
    token: str | None = None
    data: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def session(self, token: str | None = "default", origin: str | None = None) -> aiohttp.ClientSession:
        headers = {}
        token = self.token if token == "default" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if origin:
            headers["Origin"] = origin
        return aiohttp.ClientSession(self.url, headers=headers, timeout=aiohttp.ClientTimeout(total=120))


def start_studio(tmp: Path, lina_dir: Path, codec_dir: Path, *extra: str, token: str | None = None) -> StudioServer:
    """The server with the studio, no --voice (the default voice is the studio's to choose)."""
    data = tmp / "data"
    if not (data / "voices" / "fixture").is_dir():
        add_fixture_voice(data, lina_dir)
    port, http_port = free_port(), free_port()
    log = tmp / "server.log"
    args = [
        sys.executable, "-m", "wyoming_lina", "serve",
        "--uri", f"tcp://127.0.0.1:{port}",
        "--http-port", str(http_port),
        "--data-dir", str(data),
        "--device", "cpu",
        *model_args(lina_dir, codec_dir),
        "--seed", "7",
        "--max-sentence-seconds", "0.4",  # the random fixture model rarely says EOS: bound each sentence
        "--sentence-silence", "0.05",
        "--shutdown-timeout", "5",
        *(["--http-token", token] if token else []),
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    offset = log.stat().st_size if log.exists() else 0  # a restarted server appends to the same log
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = StudioServer(proc, port, log, http_port=http_port, token=token, data=data)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} during start-up:\n{server.stderr()}")
        if "wyoming_lina: ready: speaking" in log.read_bytes()[offset:].decode(errors="replace"):
            return server
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"server not ready after {STARTUP_TIMEOUT} s:\n{server.stderr()}")
