"""End to end: the real server as a subprocess on loopback, the fixture models on CPU, and
``wyoming``'s own client speaking to it the way Home Assistant does.

One server (module scope) serves every test; the last test stops it with SIGTERM. Sampling
uses a fixed seed, so every run generates the same audio. Every wait has a timeout and failures
show the server's log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fixture_support import model_args
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

SAMPLES_PER_CHUNK = 512  # set through the YAML config file, to show the server reads it
STARTUP_TIMEOUT = 90.0
EVENT_TIMEOUT = 30.0
MAX_TEXT_CHARS = 300
THREE_SENTENCES = "Hello there. How are you today? I am fine, thank you."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def client(self) -> AsyncTcpClient:
        return AsyncTcpClient("127.0.0.1", self.port, connect_timeout=5.0, read_timeout=EVENT_TIMEOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def add_fixture_voice(data_dir: Path, lina_dir: Path) -> None:
    """A real voice for the engine: the fixture's upstream speaker state, added through the store."""
    from wyoming_lina.voices.store import VoiceStore

    VoiceStore(data_dir).add("fixture", state=lina_dir / "speaker_state.safetensors", description="Fixture speaker")


def start_server(
    tmp: Path, lina_dir: Path, codec_dir: Path, *extra: str, wait_for: str = "ready", voice: str | None = "fixture"
) -> Server:
    data = tmp / "data"
    if not (data / "voices" / "fixture").is_dir():
        add_fixture_voice(data, lina_dir)
    config = tmp / "lina.yaml"
    config.write_text(f"samples-per-chunk: {SAMPLES_PER_CHUNK}\nsentence_silence: 0.05\n")
    port = free_port()
    log = tmp / f"server-{port}.log"
    args = [
        sys.executable, "-m", "wyoming_lina", "serve",
        "--config", str(config),
        "--uri", f"tcp://127.0.0.1:{port}",
        "--data-dir", str(data),
        "--device", "cpu",
        *model_args(lina_dir, codec_dir),
        "--seed", "7",
        "--max-sentence-seconds", "0.4",  # the random fixture model rarely says EOS: bound each sentence
        "--max-text-chars", str(MAX_TEXT_CHARS),
        "--shutdown-timeout", "3",
        *(["--voice", voice] if voice else []),
        *extra,
    ]  # fmt: skip
    # One intra-op thread: the engine thread and the event loop share this small machine's cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env["WYOMING_LINA_URI_FILE"] = str(tmp / f"listen-{port}.uri")  # as the image sets it
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(args, cwd=tmp, env=env, stdout=stderr, stderr=subprocess.STDOUT)
    server = Server(proc, port, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} during start-up:\n{server.stderr()}")
        if wait_for in server.stderr():
            return server
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"server not ready after {STARTUP_TIMEOUT} s:\n{server.stderr()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, lina_dir, codec_dir):
    srv = start_server(tmp_path_factory.mktemp("server"), lina_dir, codec_dir)
    yield srv
    srv.stop()


# --- helpers ------------------------------------------------------------------------------------
async def read_until(client: AsyncTcpClient, last: str, server: Server, timeout: float = EVENT_TIMEOUT) -> list[Event]:
    """Events up to and including the first of type ``last``."""
    events = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = await client.read_event()
                assert event is not None, f"connection closed after {[e.type for e in events]}\n{server.stderr()}"
                events.append(event)
                if event.type == last:
                    return events
    except TimeoutError:
        pytest.fail(f"no {last} within {timeout} s; got {[e.type for e in events]}\n{server.stderr()}")


async def ping_pong(client: AsyncTcpClient, server: Server) -> None:
    await client.write_event(Ping(text="still there?").event())
    events = await read_until(client, "pong", server, timeout=5.0)
    assert [e.type for e in events] == ["pong"], f"stray events before pong: {events}\n{server.stderr()}"
    assert events[0].data.get("text") == "still there?"


def assert_same_audio(a: bytes, b: bytes, tolerance: int = 64) -> None:
    """Same length and equal up to float rounding (rows batched differently decode a hair apart)."""
    x, y = np.frombuffer(a, "<i2").astype(np.int32), np.frombuffer(b, "<i2").astype(np.int32)
    assert len(x) == len(y), (len(x), len(y))
    assert np.abs(x - y).max(initial=0) <= tolerance, np.abs(x - y).max()


def audio_of(events: list[Event]) -> bytes:
    return b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")


def check_audio_cycle(events: list[Event], server: Server) -> bytes:
    """One audio-start (24 kHz, 16-bit, mono) before the chunks, one audio-stop after them,
    chunks of samples-per-chunk (the last may be shorter)."""
    types = [e.type for e in events]
    assert types.count("audio-start") == 1 and types.count("audio-stop") == 1, f"{types}\n{server.stderr()}"
    start, stop = types.index("audio-start"), types.index("audio-stop")
    assert all(start < i < stop for i, t in enumerate(types) if t == "audio-chunk"), types
    fmt = AudioStart.from_event(events[start])
    assert (fmt.rate, fmt.width, fmt.channels) == (24000, 2, 1)
    chunks = [AudioChunk.from_event(e) for e in events if e.type == "audio-chunk"]
    assert all((c.rate, c.width, c.channels) == (24000, 2, 1) for c in chunks)
    sizes = [c.samples for c in chunks]
    assert sizes and all(s == SAMPLES_PER_CHUNK for s in sizes[:-1]) and 0 < sizes[-1] <= SAMPLES_PER_CHUNK, sizes
    return audio_of(events)


async def synthesize(server: Server, text: str, voice: str | None = None) -> list[Event]:
    async with server.client() as client:
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event())
        return await read_until(client, "audio-stop", server)


# --- describe -----------------------------------------------------------------------------------
async def test_describe_lists_program_and_voices(server):
    async with server.client() as client:
        await client.write_event(Describe().event())
        events = await read_until(client, "info", server, timeout=5.0)
    info = Info.from_event(events[-1])
    assert len(info.tts) == 1
    program = info.tts[0]
    assert program.name == "lina" and program.installed and program.supports_synthesize_streaming
    assert program.attribution.url.startswith("https://") and program.version
    voices = {v.name: v for v in program.voices}
    assert "fixture" in voices, voices
    for voice in program.voices:
        assert voice.languages, f"voice {voice.name} has no language (HA needs one)"
        assert voice.attribution.name and voice.version and voice.description is not None
    assert voices["fixture"].installed and voices["fixture"].languages == ["en"]
    assert voices["fixture"].description == "Fixture speaker"


async def test_container_healthcheck_asks_describe(server):
    from wyoming_lina.server.healthcheck import check

    assert await check(f"tcp://127.0.0.1:{server.port}", timeout=5.0)
    assert not await check(f"tcp://127.0.0.1:{free_port()}", timeout=2.0)  # nobody listening
    # as the image's HEALTHCHECK runs it: no URI given, it asks where the server said it listens
    uri_file = server.log.parent / f"listen-{server.port}.uri"
    deadline = time.monotonic() + 10
    while not uri_file.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert uri_file.read_text().strip() == f"tcp://127.0.0.1:{server.port}"
    env = {**os.environ, "WYOMING_LINA_URI_FILE": str(uri_file)}
    command = [sys.executable, "-m", "wyoming_lina.server.healthcheck"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    (server.log.parent / "elsewhere.uri").write_text(f"tcp://0.0.0.0:{free_port()}\n")
    env["WYOMING_LINA_URI_FILE"] = str(server.log.parent / "elsewhere.uri")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1 and "tcp://127.0.0.1:" in result.stderr


async def test_describe_sees_a_voice_added_while_running(server, lina_dir):
    from wyoming_lina.voices.store import VoiceStore

    store = VoiceStore(server.log.parent / "data")
    store.add("later", state=lina_dir / "speaker_state.safetensors", description="Added later", languages=("en",))
    try:
        async with server.client() as client:
            await client.write_event(Describe().event())
            info = Info.from_event((await read_until(client, "info", server, timeout=5.0))[-1])
        assert "later" in {v.name for v in info.tts[0].voices}
    finally:
        store.remove("later")


# --- plain synthesize ---------------------------------------------------------------------------
async def test_synthesize_without_voice_uses_default(server):
    async with server.client() as client:
        await client.write_event(Synthesize(text=THREE_SENTENCES).event())
        events = await read_until(client, "audio-stop", server)
        audio = check_audio_cycle(events, server)
        assert events[0].type == "audio-start"
        assert len(audio) >= 2 * 24000 * 0.3, "expected at least 0.3 s of audio"
        await ping_pong(client, server)  # nothing after audio-stop, connection still usable
    assert "voice fixture" in server.stderr()  # the request log names the voice used


async def test_synthesize_named_voice_any_case_is_deterministic(server):
    first = check_audio_cycle(await synthesize(server, "Good morning.", "fixture"), server)
    again = check_audio_cycle(await synthesize(server, "Good morning.", "FIXTURE"), server)
    assert_same_audio(first, again)  # fixed seed: same text, same voice -> same audio


async def test_unknown_voice_is_an_error_and_connection_survives(server):
    async with server.client() as client:
        await client.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(name="nobody")).event())
        events = await read_until(client, "audio-stop", server)
        assert [e.type for e in events] == ["error", "audio-stop"], events
        error = Error.from_event(events[0])
        assert error.code == "unknown-voice"
        assert "nobody" in error.text and "fixture" in error.text  # names the voices there are
        await ping_pong(client, server)
        await client.write_event(Synthesize(text="Hello there.").event())  # and it still speaks
        check_audio_cycle(await read_until(client, "audio-stop", server), server)


async def test_empty_plain_text_still_one_start_and_stop(server):
    events = await synthesize(server, "   ")
    assert [e.type for e in events] == ["audio-start", "audio-stop"], events


async def test_unknown_events_are_ignored(server):
    async with server.client() as client:
        await client.write_event(Event(type="something-new", data={"x": 1}))
        await client.write_event(SynthesizeChunk(text="outside a stream").event())
        await ping_pong(client, server)


# --- streaming ----------------------------------------------------------------------------------
async def test_streaming_speaks_sentences_while_text_arrives(server):
    async with server.client() as client:
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="fixture")).event())
        await client.write_event(SynthesizeChunk(text="Hel").event())
        await client.write_event(SynthesizeChunk(text="lo there. How ").event())
        # The first sentence is complete: its audio must come before the rest of the text is sent.
        early = await read_until(client, "audio-chunk", server)
        assert [e.type for e in early] == ["audio-start", "audio-chunk"], early
        await client.write_event(SynthesizeChunk(text="are you?").event())
        await client.write_event(Synthesize(text="Hello there. How are you?").event())  # for old servers: ignored
        await client.write_event(SynthesizeStop().event())
        events = early + await read_until(client, "synthesize-stopped", server)
        types = [e.type for e in events]
        assert types[-1] == "synthesize-stopped" and types[-2] == "audio-stop", types
        audio = check_audio_cycle(events[:-1], server)
        await ping_pong(client, server)
    # Both sentences spoken once (not three times: the compatibility synthesize is ignored).
    one = check_audio_cycle(await synthesize(server, "Hello there. How are you?", "fixture"), server)
    assert_same_audio(audio, one)


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_short_request_gets_samples(server, streaming):
    """ "Still alive?" once got audio-start, no samples and audio-stop (EOS at the first step)."""
    async with server.client() as client:
        if streaming:  # as Home Assistant sends every request since 2025.8
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeChunk(text="Still alive?").event())
            await client.write_event(Synthesize(text="Still alive?").event())
            await client.write_event(SynthesizeStop().event())
            events = (await read_until(client, "synthesize-stopped", server))[:-1]
        else:
            await client.write_event(Synthesize(text="Still alive?").event())
            events = await read_until(client, "audio-stop", server)
    assert "error" not in [e.type for e in events]
    audio = check_audio_cycle(events, server)
    # floor: 40% of 12 characters at 5 frames per character (the fixture voice's default rate)
    assert len(audio) // 2 >= int(0.4 * 5 * len("still alive?")) * 320


async def test_streaming_empty_text_still_ends_with_stopped(server):
    async with server.client() as client:
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text=" ").event())
        await client.write_event(SynthesizeStop().event())
        events = await read_until(client, "synthesize-stopped", server)
        assert [e.type for e in events] == ["synthesize-stopped"], events


async def test_streaming_unknown_voice_error_then_stopped(server):
    async with server.client() as client:
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="nobody")).event())
        await client.write_event(SynthesizeChunk(text="Hello there. ").event())
        await client.write_event(SynthesizeStop().event())
        events = await read_until(client, "synthesize-stopped", server)
        assert [e.type for e in events] == ["error", "synthesize-stopped"], events
        assert Error.from_event(events[0]).code == "unknown-voice"
        await ping_pong(client, server)


# --- concurrency and clients that leave ---------------------------------------------------------
async def test_two_clients_at_once(server):
    texts = ["Hello there. Nice to meet you.", "Good evening. The lights are off."]
    results = await asyncio.wait_for(asyncio.gather(*(synthesize(server, t) for t in texts)), 2 * EVENT_TIMEOUT)
    for events in results:
        check_audio_cycle(events, server)


async def test_client_leaving_mid_request_does_not_disturb_the_server(server):
    async with server.client() as client:  # a plain request, abandoned after its first audio
        await client.write_event(
            Synthesize(text=" ".join(f"Sentence number {n} is here." for n in range(1, 9))).event()
        )
        await read_until(client, "audio-chunk", server)
    async with server.client() as client:  # a stream that is never stopped (HA closes on barge-in)
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text="Hello there. This stream never ends. And").event())
        await read_until(client, "audio-chunk", server)
    # the server cancels that work and serves the next client
    check_audio_cycle(await synthesize(server, "Are you still there?"), server)
    deadline = time.monotonic() + 5.0
    while "connection closed during a request" not in server.stderr() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    log = server.stderr()
    assert "connection closed during a request" in log, log
    assert "Traceback" not in log, log


async def test_describe_answers_at_once_while_synthesizing(server):
    sentences = [f"Say {n} now. " for n in range(1, 21)]
    assert len("".join(sentences)) <= MAX_TEXT_CHARS
    latencies = []
    async with server.client() as busy, server.client() as other:

        async def feed():  # a new sentence every 0.1 s keeps the engine generating for about 2 s
            await busy.write_event(SynthesizeStart().event())
            for sentence in sentences:
                await busy.write_event(SynthesizeChunk(text=sentence).event())
                await asyncio.sleep(0.1)
            await busy.write_event(SynthesizeStop().event())

        feeding = asyncio.create_task(feed())
        answer = asyncio.create_task(read_until(busy, "synthesize-stopped", server))
        await asyncio.sleep(0.3)
        for _ in range(5):
            started = time.monotonic()
            await other.write_event(Describe().event())
            await read_until(other, "info", server, timeout=5.0)
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.15)
        assert not feeding.done(), "the synthesis should still be going on"
        await feeding
        events = await answer
    check_audio_cycle(events[:-1], server)
    assert statistics.median(latencies) < 0.1, f"describe latencies while busy: {latencies}"
    assert max(latencies) < 1.0, f"describe latencies while busy: {latencies}"


# --- errors in the middle of a stream -----------------------------------------------------------
async def test_text_over_the_limit_mid_stream(server):
    async with server.client() as client:
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text="Hello there, this first sentence fits. ").event())
        await client.write_event(SynthesizeChunk(text="This one goes on and on. " * 12).event())
        await client.write_event(SynthesizeChunk(text="Ignored after the error. ").event())
        await client.write_event(SynthesizeStop().event())
        events = await read_until(client, "synthesize-stopped", server)
        types = [e.type for e in events]
        assert types.count("error") == 1 and types[-1] == "synthesize-stopped", types
        error = Error.from_event(events[types.index("error")])
        assert error.code == "text-too-long" and str(MAX_TEXT_CHARS) in error.text
        assert types.count("audio-start") == types.count("audio-stop") <= 1, types
        if "audio-stop" in types:
            assert types.index("error") < types.index("audio-stop"), types
        await ping_pong(client, server)


# --- shutdown (keep last: it stops the module's server) -----------------------------------------
async def test_sigterm_lets_requests_finish_then_cancels_the_rest_and_exits_0(server):
    async with server.client() as finishing, server.client() as endless:
        for client in (finishing, endless):
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeChunk(text="Hello there. How ").event())
            await read_until(client, "audio-chunk", server)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        # A request in progress may still finish after SIGTERM...
        await finishing.write_event(SynthesizeChunk(text="are you?").event())
        await finishing.write_event(SynthesizeStop().event())
        events = await read_until(finishing, "synthesize-stopped", server)
        assert [e.type for e in events].count("audio-stop") == 1, events
        # ...one that does not end within --shutdown-timeout (3 s) is cancelled: it hears why
        # (error shutting-down), gets the events a client waits for, then its connection closes.
        tail = []
        async with asyncio.timeout(10.0):
            while (event := await endless.read_event()) is not None:
                if event.type != "audio-chunk":
                    tail.append(event)
        assert [e.type for e in tail] == ["error", "audio-stop", "synthesize-stopped"], tail
        assert Error.from_event(tail[0]).code == "shutting-down"
        returncode = await asyncio.wait_for(asyncio.to_thread(server.proc.wait), 15.0)
    elapsed = time.monotonic() - started
    log = server.stderr()
    assert returncode == 0, log
    assert elapsed < 10.0, (elapsed, log)
    assert "waiting up to 3.0 s for 2 request(s)" in log and "cancelling 1 request(s)" in log, log
    assert log.rstrip().endswith("stopped") and "Traceback" not in log, log
