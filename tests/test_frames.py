"""The frame reader on arbitrary bytes: an event, the end of the stream, or ``BadFrame``; nothing else.

``server/frames.read_event`` is the only code that sees a client's raw bytes. Whatever arrives
(valid frames, corrupted ones, deep nesting in the header or the data block, lengths of any type
and size), it must return an ``Event`` or None, or raise ``BadFrame``: any other exception would
end a handler without the ``error`` event the client is owed. Frames that are valid Wyoming
must come back exactly as ``wyoming`` itself would read them.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wyoming.event import Event, async_read_event, async_write_event

from wyoming_lina.server.frames import MAX_DATA_BYTES, MAX_PAYLOAD_BYTES, BadFrame, read_event


async def _feed(raw: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=64 * 1024)  # asyncio's default, as in asyncio.start_server
    reader.feed_data(raw)
    reader.feed_eof()
    return reader


def read_all(raw: bytes) -> tuple[list[Event], BadFrame | None]:
    """Every event the reader yields from ``raw``, and the BadFrame that ended it (if any)."""

    async def run():
        reader = await _feed(raw)
        events: list[Event] = []
        while True:
            try:
                event = await read_event(reader)
            except BadFrame as err:
                return events, err
            if event is None:
                return events, None
            events.append(event)

    return asyncio.run(run())


def encode(event: Event) -> bytes:
    """The bytes ``wyoming`` writes for ``event`` (data in a separate block, as it does)."""

    class Sink:
        def __init__(self):
            self.parts: list[bytes] = []

        def writelines(self, parts):
            self.parts.extend(parts)

        def write(self, part):
            self.parts.append(part)

        async def drain(self):
            pass

    sink = Sink()
    asyncio.run(async_write_event(event, sink))
    return b"".join(sink.parts)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
events = st.builds(
    Event,
    type=st.text(min_size=1, max_size=16),
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    payload=st.none() | st.binary(min_size=1, max_size=300),
)


@st.composite
def deep_frames(draw) -> bytes:
    """Whole frames nested deeper than json's recursion limit (1,000), in the header line, in the
    header's data, or in a separate data block (which may be far longer than a line)."""
    open_, close = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    where = draw(st.sampled_from(["header", "data field", "data block"]))
    depth = draw(st.integers(5_000, 150_000 if where == "data block" else 9_000))  # a line stays < 64 KiB
    inner = open_ * depth + ("1" if open_ != "[" else "") + close * depth
    if where == "header":
        return inner.encode() + b"\n"
    if where == "data field":
        return ('{"type": "synthesize", "data": {"x": ' + inner + "}}").encode() + b"\n"
    block = ('{"x": ' + inner + "}").encode()
    return json.dumps({"type": "synthesize", "data_length": len(block)}).encode() + b"\n" + block


@st.composite
def corrupted(draw) -> bytes:
    raw = b"".join(encode(e) for e in draw(st.lists(events, min_size=1, max_size=3)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "flip" and raw:
            raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
        elif kind == "cut":
            raw = raw[:at]
        elif kind == "insert":
            raw = raw[:at] + draw(st.binary(max_size=20)) + raw[at:]
        else:
            key = draw(st.sampled_from(["data_length", "payload_length"]))
            header = {"type": "x", key: draw(json_values | st.integers(-(2**63), 2**63))}
            raw = json.dumps(header).encode() + b"\n" + raw
    return raw


@settings(max_examples=300, deadline=None)
@given(st.lists(events, min_size=1, max_size=4))
def test_valid_frames_read_as_wyoming_reads_them(sequence):
    raw = b"".join(encode(e) for e in sequence)
    small = all(len(json.dumps(e.data).encode()) <= MAX_DATA_BYTES for e in sequence)
    assert small  # the strategy stays far under the limits
    read, error = read_all(raw)
    assert error is None

    async def reference():
        reader = await _feed(raw)
        out = []
        while (event := await async_read_event(reader)) is not None:
            out.append(event)
        return out

    expected = asyncio.run(reference())
    assert [(e.type, e.data, e.payload) for e in read] == [(e.type, e.data, e.payload) for e in expected]


@settings(max_examples=400, deadline=None)
@given(corrupted() | deep_frames() | st.binary(max_size=2000))
def test_any_bytes_give_events_the_end_or_one_bad_frame(raw):
    read, error = read_all(raw)  # any other exception fails the test
    for event in read:
        assert isinstance(event.type, str) and isinstance(event.data, dict)
        assert event.payload is None or len(event.payload) <= MAX_PAYLOAD_BYTES
    if error is not None:
        assert str(error).strip() and "\n" not in str(error), repr(error)


@settings(max_examples=50, deadline=None)
@given(deep_frames())
def test_deep_nesting_is_a_bad_frame_that_says_so(raw):
    read, error = read_all(raw)
    assert read == [] and error is not None
    assert "nested too deeply" in str(error), error


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"type": "synthesize", "data_length": MAX_DATA_BYTES + 1}, "over the limit"),
        ({"type": "audio-chunk", "payload_length": MAX_PAYLOAD_BYTES + 1}, "over the limit"),
        ({"type": "synthesize", "data_length": True}, "non-negative integer"),
        ({"type": "synthesize", "payload_length": 2**80}, "over the limit"),
        ({"type": ["synthesize"]}, "string 'type'"),
    ],
)
def test_lengths_and_types_are_checked_before_anything_is_read(header, message):
    read, error = read_all(json.dumps(header).encode() + b"\n")
    assert read == [] and error is not None and message in str(error), error
