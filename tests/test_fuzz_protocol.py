"""Bad input never takes the server down.

The real server (subprocess, loopback, fixture models on CPU) receives malformed Wyoming
frames on raw sockets while another client keeps synthesizing; that client's audio must stay
complete, every bad connection gets an ``error`` event or is closed, and the server's memory
stays bounded after headers that announce gigabytes.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability_support import Victim, WyomingSocket, check_plain, exchange, frame, rss_bytes
from test_server_e2e import start_server

GIB4 = 4 * 1024**3


@pytest.fixture(scope="module")
def server(tmp_path_factory, lina_dir, codec_dir):
    srv = start_server(tmp_path_factory.mktemp("fuzz"), lina_dir, codec_dir, "--sentence-silence", "0")
    yield srv
    srv.stop()


def alive(server) -> None:
    assert server.proc.poll() is None, f"the server died:\n{server.stderr()}"
    events, _ = exchange(server.port, frame("ping", {"text": "ok"}), timeout=5.0)
    assert [e.type for e in events] == ["pong"], events


def error_codes(events) -> list[str]:
    return [e.data.get("code") for e in events if e.type == "error"]


# Frames the stream cannot recover from: error 'bad-request', then the server closes.
BROKEN_FRAMES = {
    "not json": b"this is not json\n",
    "invalid utf-8": b'\xff\xfe{"type": "ping"}\n',
    "json list": b"[1, 2, 3]\n",
    "type missing": b'{"data": {"text": "hi"}}\n',
    "type a number": b'{"type": 5}\n',
    "data a list": b'{"type": "synthesize", "data": [1]}\n',
    "data_length a string": b'{"type": "synthesize", "data_length": "12"}\n',
    "data_length negative": b'{"type": "synthesize", "data_length": -5}\n',
    "payload_length a float": b'{"type": "audio-chunk", "payload_length": 1.5}\n',
    "data block a list": b'{"type": "synthesize", "data_length": 3}\n[1]',
    "data block not json": b'{"type": "synthesize", "data_length": 5}\n{{{{{',
    "data block invalid utf-8": b'{"type": "synthesize", "data_length": 4}\n\xff\xff\xff\xff',
    "header line over 64 KiB": b'{"type": "synthesize", "data": {"text": "' + b"a" * 100_000 + b'"}}\n',
}

# Well framed but wrong fields: error 'bad-request', the connection stays usable.
BAD_EVENTS = {
    "synthesize text a number": frame("synthesize", {"text": 42}),
    "synthesize text a list": frame("synthesize", {"text": ["a", "b"]}),
    "synthesize text missing": frame("synthesize", {"voice": {"name": "fixture"}}),
    "synthesize voice a string": frame("synthesize", {"text": "Hi.", "voice": "fixture"}),
    "synthesize voice name a number": frame("synthesize", {"text": "Hi.", "voice": {"name": 7}}),
    "synthesize-start voice a list": frame("synthesize-start", {"voice": ["fixture"]}),
}

# Events in the wrong order or unknown: ignored, no error, the connection stays usable.
IGNORED = {
    "unknown type": frame("no-such-event", {"x": 1}),
    "chunk without start": frame("synthesize-chunk", {"text": "Hello."}),
    "stop without start": frame("synthesize-stop"),
    "audio from the client": frame("audio-chunk", {"rate": 24000, "width": 2, "channels": 1}, b"\0" * 640),
}


def test_malformed_frames_get_an_error_and_are_closed_while_another_client_speaks(server):
    with Victim(server.port) as victim:
        for name, data in BROKEN_FRAMES.items():
            events, closed = exchange(server.port, data, half_close=False, timeout=10.0)
            assert closed, f"{name}: connection left open"
            assert error_codes(events) == ["bad-request"], f"{name}: {events}"
        for name, data in BAD_EVENTS.items():
            events, closed = exchange(server.port, data + frame("ping", {"text": "after"}))
            assert error_codes(events) == ["bad-request"], f"{name}: {events}"
            assert events[-1].type == "pong", f"{name}: connection not usable after the error: {events}"
        for name, data in IGNORED.items():
            events, _ = exchange(server.port, data + frame("ping", {"text": "after"}))
            assert [e.type for e in events] == ["pong"], f"{name}: {events}"
        for cut in (5, 30, 45):  # truncated frames: the client goes away mid-frame
            whole = frame("synthesize", {"text": "Hello there."})
            events, closed = exchange(server.port, whole[:cut])
            assert closed and not events, (cut, events)
        rng = random.Random(8)
        for _ in range(20):  # binary garbage, sometimes with newlines
            garbage = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 3000)))
            events, closed = exchange(server.port, garbage, half_close=True)
            assert closed and set(error_codes(events)) <= {"bad-request"}, events
    assert victim.failures == [] and victim.done >= 1, (victim.failures, victim.done, server.stderr())
    alive(server)
    assert "Traceback" not in server.stderr(), server.stderr()


@pytest.mark.parametrize("field", ["data_length", "payload_length"])
def test_header_announcing_gigabytes_is_refused_without_allocating(server, field):
    """4 GiB announced, 64 MiB actually sent: refused at the header, none of it is buffered."""
    before = rss_bytes(server.proc.pid)
    header = json.dumps({"type": "synthesize", field: GIB4}).encode() + b"\n"
    events, closed = exchange(server.port, header + b"\0" * (64 << 20), half_close=False, timeout=10.0)
    assert closed and error_codes(events) == ["bad-request"], events
    assert "over the limit" in events[0].data["text"]
    grown = rss_bytes(server.proc.pid) - before
    assert grown < 32 << 20, f"server RSS grew by {grown / 2**20:.0f} MiB"
    alive(server)


def test_events_in_the_wrong_order(server):
    with WyomingSocket(server.port) as client:
        # a second synthesize-start ends the first stream: both answer in order
        client.send(frame("synthesize-start", {"voice": {"name": "fixture"}}))
        client.send(frame("synthesize-chunk", {"text": "Hello there. "}))
        client.send(frame("synthesize-start"))
        client.send(frame("synthesize-chunk", {"text": "Good night."}))
        client.send(frame("synthesize-stop"))
        first = client.read_until("synthesize-stopped")
        check_plain(first[:-1])
        second = client.read_until("synthesize-stopped")
        check_plain(second[:-1])
        # a stop that arrives twice is ignored the second time
        client.send(frame("synthesize-stop") + frame("ping", {"text": "x"}))
        assert [e.type for e in client.read_until("pong")] == ["pong"]
        # a plain synthesize still works afterwards
        client.send(frame("synthesize", {"text": "Still here."}))
        check_plain(client.read_until("audio-stop"))


# --- property-based: any mix of events and corruptions -------------------------------------------
KNOWN = ["synthesize", "synthesize-start", "synthesize-chunk", "synthesize-stop", "describe", "ping", "audio-start"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
event_data = st.fixed_dictionaries(
    {},
    optional={
        "text": st.text(max_size=40) | json_values,
        "voice": st.fixed_dictionaries(
            {}, optional={"name": st.sampled_from(["fixture", "nobody", "..", ""]) | json_values}
        )
        | json_values,
    },
)


@st.composite
def frames(draw) -> bytes:
    kind = draw(st.sampled_from(KNOWN) | st.text(min_size=1, max_size=12))
    data = draw(event_data)
    raw = frame(kind, data)
    corruption = draw(st.sampled_from(["none", "none", "none", "truncate", "flip", "length"]))
    if corruption == "truncate":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif corruption == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    elif corruption == "length":
        header = {"type": kind, "data_length": draw(st.integers(-10, 2**62) | json_values)}
        raw = json.dumps(header).encode() + b"\n"
    return raw


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(frames(), min_size=1, max_size=4))
def test_any_sequence_of_frames_is_answered_or_closed_never_fatal(server, sequence):
    events, closed = exchange(server.port, b"".join(sequence), timeout=15.0)
    assert closed, "the server must end the connection after our EOF"
    assert server.proc.poll() is None, server.stderr()
    for event in events:
        assert event.type in {"error", "pong", "info", "audio-start", "audio-chunk", "audio-stop", "synthesize-stopped"}
        if event.type == "error":
            assert isinstance(event.data.get("text"), str) and event.data.get("code"), event


def test_server_healthy_after_the_fuzzing(server):
    alive(server)
    with WyomingSocket(server.port) as client:
        client.send(frame("synthesize", {"text": "Hello there."}))
        check_plain(client.read_until("audio-stop"))
    log = server.stderr()
    assert "Traceback" not in log and "exception was never retrieved" not in log, log
