"""Helpers for the reliability, fuzz and load tests (no tests here).

Blocking loopback sockets with timeouts everywhere, Wyoming frames parsed with the library's
own reader, and the server's memory read from /proc.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from test_server_e2e import Server  # noqa: F401  (re-exported for the other modules)
from wyoming.event import Event, read_event

FRAME_SAMPLES = 320  # WavTokenizer: one code = 320 samples at 24 kHz


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def frame(event_type: str, data: dict | None = None, payload: bytes | None = None) -> bytes:
    """One Wyoming frame as the library writes it (data in a separate block)."""
    header: dict = {"type": event_type, "version": "1.0.0"}
    body = b""
    if data:
        body = json.dumps(data).encode()
        header["data_length"] = len(body)
    if payload:
        header["payload_length"] = len(payload)
    return json.dumps(header).encode() + b"\n" + body + (payload or b"")


def parse_events(data: bytes) -> list[Event]:
    stream = io.BytesIO(data)
    events = []
    while (event := read_event(stream)) is not None:
        events.append(event)
    return events


def exchange(port: int, data: bytes, *, timeout: float = 10.0, half_close: bool = True) -> tuple[list[Event], bool]:
    """Send ``data`` raw, then read until the server closes (or ``timeout``).

    Returns (events received, whether the server closed the connection). With ``half_close``
    our side sends EOF after the data, so a healthy server always ends the connection.
    """
    received = bytearray()
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused the frame and closed: what we read tells the rest
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    return parse_events(bytes(received)), closed


class WyomingSocket:
    """A tiny blocking client: write events, read events up to a given type."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, last: str) -> list[Event]:
        events = []
        while True:
            event = read_event(self.file)
            if event is None:
                raise ConnectionError(f"closed after {[e.type for e in events]}")
            events.append(event)
            if event.type == last:
                return events

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def audio_samples(events: list[Event]) -> int:
    return sum(len(e.payload or b"") // 2 for e in events if e.type == "audio-chunk")


def check_plain(events: list[Event], silence_samples: int = 0, sentences: int = 1) -> int:
    """One audio-start ... audio-stop, no error, and whole codec frames (plus the pauses)."""
    types = [e.type for e in events]
    assert "error" not in types, [e.data for e in events if e.type == "error"]
    assert types.count("audio-start") == 1 and types.count("audio-stop") == 1, types
    assert types[0] == "audio-start" and types[-1] == "audio-stop", types
    samples = audio_samples(events)
    speech = samples - silence_samples * (sentences - 1)
    assert speech > 0 and speech % FRAME_SAMPLES == 0, (samples, sentences)
    return samples


@dataclass
class Victim:
    """Another client that keeps synthesizing while something else happens; every answer is checked."""

    port: int
    text: str = "Hello there."
    done: int = 0
    failures: list = field(default_factory=list)
    seconds: list = field(default_factory=list)  # how long each finished request took
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                started = time.monotonic()
                with WyomingSocket(self.port) as client:
                    client.send(frame("synthesize", {"text": self.text}))
                    check_plain(client.read_until("audio-stop"))
                self.seconds.append(time.monotonic() - started)
                self.done += 1
            except Exception as err:  # recorded, asserted by the test
                self.failures.append(repr(err))
                return

    def wait_for(self, requests: int, timeout: float) -> None:
        """Until ``requests`` requests are done (or one failed, or ``timeout`` seconds passed)."""
        deadline = time.monotonic() + timeout
        while self.done < requests and not self.failures and time.monotonic() < deadline:
            time.sleep(0.1)

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the victim client hangs"
