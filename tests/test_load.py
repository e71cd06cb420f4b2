"""Load: 64 concurrent clients on CPU (fixture models), plain and streaming requests mixed,
some clients leaving mid-request (seeded). Every finished request is whole, nothing is left
behind, and the server's memory is flat over two identical rounds.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from test_reliability_support import FRAME_SAMPLES, audio_samples, frame, rss_bytes
from test_server_e2e import start_server
from wyoming.event import async_read_event

CLIENTS = 64
TEXTS = ["Hello there.", "Good morning.", "Lights on.", "It is warm.", "Okay."]


@pytest.fixture(scope="module")
def server(tmp_path_factory, lina_dir, codec_dir):
    srv = start_server(
        tmp_path_factory.mktemp("load"), lina_dir, codec_dir,
        "--max-connections", "80", "--max-sentence-seconds", "0.2", "--sentence-silence", "0",
    )  # fmt: skip
    yield srv
    srv.stop()


async def one_client(port: int, rng: random.Random) -> str:
    """One request; returns 'plain', 'stream' or 'left' (the client went away on purpose)."""
    streaming = rng.random() < 0.5
    leave_after = rng.choice([None, None, None, 0, 1])  # leave after N audio chunks
    text = " ".join(rng.sample(TEXTS, rng.randint(1, 2)))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if streaming:
            writer.write(frame("synthesize-start", {"voice": {"name": "fixture"}}))
            for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
                writer.write(frame("synthesize-chunk", {"text": piece}))
            writer.write(frame("synthesize-stop"))
        else:
            writer.write(frame("synthesize", {"text": text}))
        await writer.drain()
        last = "synthesize-stopped" if streaming else "audio-stop"
        events, chunks = [], 0
        while True:
            event = await async_read_event(reader)
            assert event is not None, f"closed early after {[e.type for e in events]}"
            events.append(event)
            if event.type == "audio-chunk":
                chunks += 1
                if leave_after is not None and chunks > leave_after:
                    return "left"
            if event.type == last:
                break
        types = [e.type for e in events]
        assert "error" not in types, [e.data for e in events if e.type == "error"]
        assert types.count("audio-start") == 1 and types.count("audio-stop") == 1, types
        if streaming:
            assert types[-2:] == ["audio-stop", "synthesize-stopped"], types
        else:
            assert types[0] == "audio-start" and types[-1] == "audio-stop", types
        samples = audio_samples(events)
        assert samples > 0 and samples % FRAME_SAMPLES == 0, samples  # --sentence-silence 0
        return "stream" if streaming else "plain"
    finally:
        writer.close()


async def round_of(port: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    rngs = [random.Random(rng.getrandbits(32)) for _ in range(CLIENTS)]
    results = await asyncio.wait_for(asyncio.gather(*(one_client(port, r) for r in rngs)), 90)
    return {kind: results.count(kind) for kind in ("plain", "stream", "left")}


async def describe_ok(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame("describe"))
        await writer.drain()
        event = await asyncio.wait_for(async_read_event(reader), 5)
        assert event is not None and event.type == "info"
    finally:
        writer.close()


async def test_64_clients_twice_all_complete_nothing_leaks(server):
    rss = []
    started = time.monotonic()
    for round_number in range(2):
        counts = await round_of(server.port, seed=round_number)  # same mix shape, other texts
        assert counts["plain"] and counts["stream"] and counts["left"], counts
        await describe_ok(server.port)
        await asyncio.sleep(0.5)  # cancelled rows leave the engine at its next step
        rss.append(rss_bytes(server.proc.pid))
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"two rounds took {elapsed:.1f} s"
    growth = rss[1] - rss[0]
    assert growth < 48 << 20, f"RSS grew by {growth / 2**20:.0f} MiB between rounds ({rss})"
    log = server.stderr()
    assert "Traceback" not in log and "exception was never retrieved" not in log, log
    assert log.count("connection closed during a request") >= 1
    # every request that began has ended: the shutdown will find none in progress
    server.proc.terminate()
    assert server.proc.wait(15) == 0
    assert "waiting up to" not in server.log.read_text(), "requests were still counted as in progress"
