"""Reading Wyoming frames from an untrusted client.

``wyoming.event.async_read_event`` trusts the peer: a header may announce gigabytes, a frame may
never finish, and a malformed one raises whatever the JSON parser raises (``RecursionError`` for
deeply nested data, which ends a handler without an answer). Here every announced length is
bounded before anything is read, a frame that has started must finish within
``frame_timeout``, and every way a frame can be wrong is one ``BadFrame``.
"""

from __future__ import annotations

import asyncio
import json

from wyoming.event import Event

MAX_DATA_BYTES = 1 << 20  # longest JSON data block a client may announce (text is far shorter)
MAX_PAYLOAD_BYTES = 1 << 20  # a TTS client sends no audio; refuse payloads that could exhaust memory


class BadFrame(ValueError):
    """A frame that is not valid Wyoming: the byte stream cannot be trusted after it."""


class ClientTimeout(Exception):
    """The client left a frame unfinished, or stayed silent, for too long."""


def _json(raw: bytes, what: str):
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:  # invalid JSON or UTF-8; nesting the parser cannot follow
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise BadFrame(f"{what} is not JSON: {reason}") from None


async def read_event(reader: asyncio.StreamReader, first: bytes = b"") -> Event | None:
    """One frame (``first``: its first byte, already read). None at the end of the stream or when
    the client closed mid-frame; ``BadFrame`` for anything malformed."""
    try:
        line = first + await reader.readline()
    except ValueError as err:  # a line over the reader's limit (64 KiB)
        raise BadFrame(f"header line too long: {err}") from None
    if not line.endswith(b"\n"):
        return None  # the stream ended (mid-header)
    header = _json(line, "the header")
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise BadFrame("header must be a JSON object with a string 'type'")
    data = header.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadFrame("'data' must be a JSON object")
    lengths = []
    for key, limit in (("data_length", MAX_DATA_BYTES), ("payload_length", MAX_PAYLOAD_BYTES)):
        length = header.get(key)
        if length is None:
            length = 0
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise BadFrame(f"'{key}' must be a non-negative integer")
        if length > limit:
            raise BadFrame(f"'{key}' of {length} bytes is over the limit of {limit}")
        lengths.append(length)
    try:
        if lengths[0]:
            extra = _json(await reader.readexactly(lengths[0]), "the data block")
            if not isinstance(extra, dict):
                raise BadFrame("the data block must be a JSON object")
            data.update(extra)
        payload = await reader.readexactly(lengths[1]) if lengths[1] else None
    except asyncio.IncompleteReadError:
        return None  # closed mid-frame
    return Event(type=header["type"], data=data, payload=payload)


async def next_event(
    reader: asyncio.StreamReader, silence_limit, frame_timeout: float, poll: float = 1.0
) -> Event | None:
    """The next frame, or None at the end of the stream.

    ``silence_limit()`` says how long the client may stay silent right now (None: no limit, e.g.
    while its request's audio is being sent); it is asked again every ``poll`` seconds, so a
    request that ends starts the count. Once a frame's first byte arrives, the whole frame must
    arrive within ``frame_timeout``. Either limit passed raises ``ClientTimeout``."""
    loop = asyncio.get_running_loop()
    silent_since = loop.time()
    while True:
        try:
            first = await asyncio.wait_for(reader.readexactly(1), poll)
            break
        except asyncio.IncompleteReadError:
            return None
        except asyncio.TimeoutError:
            limit = silence_limit()
            now = loop.time()
            if limit is None:
                silent_since = now
            elif now - silent_since > limit:
                raise ClientTimeout(f"no event for {limit:g} s") from None
    try:
        return await asyncio.wait_for(read_event(reader, first), frame_timeout)
    except asyncio.TimeoutError:
        raise ClientTimeout(f"a frame was not finished within {frame_timeout:g} s") from None
