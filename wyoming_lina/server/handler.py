"""One Wyoming connection: events in, audio out. Thin: the engine does the work.

Per connection, requests run one after another; per request:

* ``synthesize`` (plain): [``audio-start``, ``audio-chunk``*] then exactly one ``audio-stop``.
  A failure sends ``error`` {text, code} before that ``audio-stop`` (so a client that reads up
  to ``audio-stop`` always finishes); ``audio-start`` comes with the first audio, or just before
  ``audio-stop`` when there is no audio and no error (empty text).
* ``synthesize-start``, ``synthesize-chunk``*, ``synthesize-stop`` (streaming): each sentence
  is submitted as soon as it is complete, and audio is sent while chunks keep arriving. One
  ``audio-start``/``audio-stop`` cycle per stream (only if there is audio; pauses between
  sentences are in the audio), an ``error`` when something fails, and always
  ``synthesize-stopped`` last, once ``synthesize-stop`` has arrived. The ``synthesize`` that
  clients send inside a stream for old servers is ignored.

Audio is sent by a background task (the "player"), so events keep being read while audio
is produced: a describe is answered at once, and a client that goes away cancels its work.
Voice listing, and voice lookups that may read files or encode a newly added clip, run in worker
threads: the event loop must never wait for that. A voice already loaded whose files are
unchanged is taken on the event loop (a few ``stat`` calls): under load the hop to a thread and
back cost tens of milliseconds of time to first audio.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from wyoming.audio import AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from ..engine.synthesizer import Synthesizer
from ..engine.text_stream import SynthesisStream
from ..errors import LinaError, OverloadedError, ShuttingDownError, SynthesisError
from .audio_frames import audio_frames
from .frames import BadFrame, ClientTimeout, next_event
from .info import InfoBuilder
from .metrics import ServerMetrics
from .service import Service
from .tracking import ConnectionCounter, RequestTracker

_LOGGER = logging.getLogger(__name__)
WIDTH = 2  # bytes per sample (16-bit PCM)
CHANNELS = 1


@dataclass(frozen=True)
class HandlerSettings:
    samples_per_chunk: int = 1024
    max_connections: int | None = None  # None: no limit
    idle_timeout: float = 60.0  # seconds a connection may stay silent with no request running
    stream_timeout: float = 300.0  # seconds a text stream may wait for its next chunk
    frame_timeout: float = 10.0  # seconds a frame may take from its first byte to its last


class BadEvent(ValueError):
    """A well-framed event whose fields have the wrong types or are missing."""


def _text(event: Event) -> str:
    text = event.data.get("text")
    if not isinstance(text, str):
        raise BadEvent(f"{event.type}: 'text' must be a string")
    return text


def _voice(event: Event) -> str | None:
    """The requested voice name (None: the default); the raw data is checked, not trusted."""
    voice = event.data.get("voice")
    if voice is None:
        return None
    if not isinstance(voice, dict):
        raise BadEvent(f"{event.type}: 'voice' must be an object")
    name = voice.get("name")
    if name is not None and not isinstance(name, str):
        raise BadEvent(f"{event.type}: voice 'name' must be a string")
    return name or None  # HA never sends a language only


@dataclass
class _Request:
    """One synthesize, or one synthesize-start ... synthesize-stop."""

    streaming: bool
    voice: str
    started: float = field(default_factory=time.monotonic)
    chars: int = 0
    samples: int = 0
    first_audio: float | None = None
    queued: float | None = None  # when a plain request's sentences were all handed to the engine
    audio_started: bool = False
    error: LinaError | None = None
    gone: bool = False  # the client closed the connection while audio was being sent
    gone_logged: bool = False
    audio_stopped: bool = False  # audio-stop was sent
    stream_stopped: bool = False  # synthesize-stopped was sent
    stop_received: asyncio.Event = field(default_factory=asyncio.Event)
    pending: bytearray = field(default_factory=bytearray)  # audio not yet sent (under one chunk)

    def fail(self, err: LinaError) -> None:
        if self.error is None:  # the first failure is the one to report
            self.error = err


class LinaEventHandler(AsyncEventHandler):
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        info: InfoBuilder,
        service: Service,
        settings: HandlerSettings = HandlerSettings(),
        tracker: RequestTracker | None = None,
        connections: ConnectionCounter | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        super().__init__(reader, writer)
        self.metrics = metrics
        self.info = info
        self.service = service
        self.synth: Synthesizer | None = service.synthesizer  # (awaited by the first request if loading)
        self.settings = settings
        self.tracker = tracker or RequestTracker()
        self.connections = connections or ConnectionCounter()
        self._closing = False
        self._frames = None  # audio_frames(...) once the synthesizer (its sample rate) is there
        self._reset()

    def _reset(self) -> None:
        """Forget the previous request (the only per-request state of the connection)."""
        self._request: _Request | None = None
        self._stream: SynthesisStream | None = None
        self._player: asyncio.Task | None = None  # sends the stream's audio
        self._task: asyncio.Task | None = None  # waits for the player, then ends the request

    # --- events ----------------------------------------------------------------------------
    async def handle_event(self, event: Event) -> bool:
        try:
            return await self._handle(event)
        except BadEvent as err:  # the frame was sound: answer, ignore the event, keep the connection
            _LOGGER.warning("bad event from a client: %s", err)
            await self.write_event(Error(text=str(err), code="bad-request").event())
            return True
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as err:  # a bug: the client still gets an answer, the server goes on
            _LOGGER.exception("failed to handle a %s event", event.type)
            await self.write_event(Error(text=f"internal error: {err}", code="internal-error").event())
            return True

    async def _handle(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            try:
                voices = await asyncio.to_thread(self.info.list_voices)
            except Exception as err:  # the store should log and skip broken voices; this is worse
                _LOGGER.exception("cannot list the voices")
                await self.write_event(Error(text=f"cannot list the voices: {err}", code="voice-error").event())
            else:
                await self.write_event(self.info.build(voices).event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif Synthesize.is_type(event.type):
            if self._in_stream():
                _LOGGER.debug("ignoring the compatibility synthesize inside a stream")
            else:
                text, voice = _text(event), _voice(event)
                await self._begin(streaming=False, voice=voice)
                self._add_text(text)
                self._end_text()
                self._request.queued = time.monotonic()
        elif SynthesizeStart.is_type(event.type):
            await self._begin(streaming=True, voice=_voice(event))
        elif SynthesizeChunk.is_type(event.type):
            if self._in_stream():
                self._add_text(_text(event))
            else:
                _LOGGER.debug("ignoring synthesize-chunk outside a stream")
        elif SynthesizeStop.is_type(event.type):
            if self._in_stream():
                self._end_text()
            else:
                _LOGGER.debug("ignoring synthesize-stop outside a stream")
        else:
            _LOGGER.debug("ignoring event %s", event.type)
        return True  # unknown events keep the connection

    async def run(self) -> None:
        """Read events until EOF (as ``AsyncEventHandler.run``, with the checked reader, its
        timeouts and the connection limit); a malformed frame is answered with ``error`` and ends
        the connection, as does a client silent or mid-frame for too long."""
        self.connections.open += 1
        try:
            limit = self.settings.max_connections
            if limit is not None and self.connections.open > limit:
                _LOGGER.warning("refusing a connection: %d are open (--max-connections %d)", limit, limit)
                err = OverloadedError(f"the server already has {limit} connections; try again shortly")
                await self.write_event(Error(text=str(err), code=err.code).event())
                return
            while not self._closing:
                try:
                    event = await next_event(self.reader, self._silence_limit, self.settings.frame_timeout)
                except BadFrame as err:
                    _LOGGER.warning("closing a connection after a malformed frame: %s", err)
                    await self.write_event(Error(text=f"malformed frame: {err}", code="bad-request").event())
                    break
                except ClientTimeout as err:
                    _LOGGER.info("closing a connection: %s", err)
                    break
                if event is None or not await self.handle_event(event):
                    break
        except ConnectionError as err:  # the client reset the connection (it gave up): not an error
            _LOGGER.debug("connection lost: %s", err)
        except Exception:  # a bug: logged here, never an unretrieved task exception
            _LOGGER.exception("a connection failed")
        finally:
            self.connections.open -= 1
            await self.disconnect()
            self.writer.close()

    async def stop(self) -> None:
        """The server stops (wyoming's ``AsyncServer.stop`` calls this once requests had their
        grace period): a request still running ends with ``error`` shutting-down and its closing
        events (``audio-stop``, ``synthesize-stopped``), then the connection closes."""
        self._closing = True
        try:
            await self._abort(ShuttingDownError("the server is shutting down"))
        finally:
            self.writer.close()

    def _silence_limit(self) -> float | None:
        """How long the client may stay silent now (None: its request's audio is being sent)."""
        if self._in_stream():
            return self.settings.stream_timeout  # waiting for the rest of its text
        if self._task is not None and not self._task.done():
            return None
        return self.settings.idle_timeout

    async def disconnect(self) -> None:
        """The client is gone (or the server stops): drop this connection's work."""
        if self._task is not None and not self._task.done():
            self._gone(self._request)
        if self._stream is not None:
            self._stream.cancel()
        for task in (self._player, self._task):
            if task is not None and not task.done():
                task.cancel()

    # --- one request -----------------------------------------------------------------------
    def _in_stream(self) -> bool:
        request = self._request
        return request is not None and request.streaming and not request.stop_received.is_set()

    async def _begin(self, streaming: bool, voice: str | None) -> None:
        if self._task is not None and not self._task.done():
            if self._in_stream():
                _LOGGER.warning("synthesize-start before synthesize-stop: ending the previous stream")
                self._end_text()
            await asyncio.wait([self._task])  # requests of one connection run in order
        self._reset()
        request = self._request = _Request(streaming=streaming, voice=repr(voice) if voice else "(default)")
        self.tracker.begin()
        try:
            if self.synth is None:  # the model is still loading: this request waits for it
                self.synth = await self.service.wait()
            self._frames = audio_frames(self.synth.sample_rate, WIDTH, CHANNELS, self.settings.samples_per_chunk)
            resolved = self.synth.loaded_voice(voice) or await asyncio.to_thread(self.synth.resolve_voice, voice)
            request.voice = resolved.name
            # this connection is the owner whose sentences the engine admits in turn with others'
            self._stream = SynthesisStream(self.synth, resolved, self.synth.settings.sampling, owner=self)
            self._player = asyncio.create_task(self._play(request, self._stream), name="lina player")
        except LinaError as err:
            request.fail(err)
        except asyncio.CancelledError:
            self.tracker.end()
            raise
        except Exception as err:  # a bug: still an answer for the client
            _LOGGER.exception("could not start a request")
            request.fail(SynthesisError(f"could not start: {err}"))
        self._task = asyncio.create_task(self._run(request, self._player), name="lina request")
        self._task.add_done_callback(lambda _: self.tracker.end())  # however it ends, even unstarted

    def _add_text(self, text: str) -> None:
        request = self._request
        request.chars += len(text)
        if request.error is None and self._stream is not None:
            self._guard(self._stream.add_text, text)

    def _end_text(self) -> None:
        request = self._request
        request.stop_received.set()
        if request.error is None and self._stream is not None:
            self._guard(self._stream.finish)

    def _guard(self, action, *args) -> None:
        """Run a stream call; a failure ends the request's audio and is reported."""
        try:
            action(*args)
        except Exception as err:
            if not isinstance(err, LinaError):
                _LOGGER.exception("synthesis failed")
                err = SynthesisError(f"synthesis failed: {err}")
            self._request.fail(err)
            self._stream.cancel()
            if self._player is not None:
                self._player.cancel()

    async def _play(self, request: _Request, stream: SynthesisStream) -> None:
        """Send the stream's audio; ends without raising (outcome recorded in ``request``)."""
        try:
            async for samples in stream:
                await self._send_audio(request, samples)
            if request.pending:
                audio = bytes(request.pending)
                request.pending.clear()
                await self._send_chunks(request, audio)
        except LinaError as err:
            request.fail(err)
        except ConnectionError:
            request.gone = True
        except Exception as err:  # a bug: still an answer for the client
            _LOGGER.exception("synthesis failed")
            request.fail(SynthesisError(f"synthesis failed: {err}"))
        finally:
            stream.cancel()

    async def _run(self, request: _Request, player: asyncio.Task | None) -> None:
        try:
            if player is not None:
                await asyncio.wait([player])
            if request.gone:
                raise ConnectionResetError("the client closed the connection")
            if request.error is not None:
                await self.write_event(Error(text=str(request.error), code=request.error.code).event())
            if not request.streaming and request.error is None and not request.audio_started:
                await self._start_audio(request)  # empty text: still one start/stop pair
            await self._stop_audio(request)
            if request.streaming:
                await request.stop_received.wait()
                await self._stop_stream(request)
            self._log(request)
        except ConnectionError:
            self._gone(request)
        finally:
            if player is not None and not player.done():
                player.cancel()

    @staticmethod
    def _gone(request: _Request) -> None:
        """The client closed the connection before its request ended (noticed by the reader or
        by a failed write, whichever comes first): logged once, its work is cancelled."""
        if not request.gone_logged:
            request.gone_logged = True
            _LOGGER.info("connection closed during a request (voice %s): cancelling it", request.voice)

    async def _abort(self, err: LinaError) -> None:
        """End the request in progress now: its work is cancelled, the client gets ``error`` and
        the closing events it still waits for."""
        request, task = self._request, self._task
        if task is None or task.done():
            return
        _LOGGER.info("ending a request (voice %s): %s", request.voice, err)
        if self._stream is not None:
            self._stream.cancel()
        running = [t for t in (self._player, task) if t is not None and not t.done()]
        for t in running:
            t.cancel()
        await asyncio.wait(running)
        request.fail(err)
        try:
            await self.write_event(Error(text=str(err), code=err.code).event())
            await self._stop_audio(request)
            if request.streaming:
                await self._stop_stream(request)
        except (ConnectionError, RuntimeError):  # the client is gone too
            return
        if self.synth is not None:
            self._log(request)

    async def _stop_audio(self, request: _Request) -> None:
        """The one audio-stop of a request (a plain request always has one)."""
        if not request.audio_stopped and (request.audio_started or not request.streaming):
            request.audio_stopped = True
            await self.write_event(AudioStop().event())

    async def _stop_stream(self, request: _Request) -> None:
        if not request.stream_stopped:
            request.stream_stopped = True
            await self.write_event(SynthesizeStopped().event())

    # --- audio -----------------------------------------------------------------------------
    async def _send_audio(self, request: _Request, samples: np.ndarray) -> None:
        """Send every whole chunk of the audio so far (one write for all of them); keep the rest."""
        pending = request.pending
        pending += samples.astype("<i2", copy=False).tobytes()
        whole = len(pending) - len(pending) % self._frames.chunk_bytes
        if whole:
            audio = bytes(pending[:whole])
            del pending[:whole]
            await self._send_chunks(request, audio)

    async def _start_audio(self, request: _Request) -> None:
        request.audio_started = True
        await self.write_event(AudioStart(rate=self.synth.sample_rate, width=WIDTH, channels=CHANNELS).event())

    async def _send_chunks(self, request: _Request, audio: bytes) -> None:
        """``audio`` as audio-chunk events (after audio-start, the first time) in one write."""
        frames = self._frames.chunks(audio)
        if not request.audio_started:
            request.audio_started = True
            frames = self._frames.start + frames
        self.writer.write(frames)
        await self.writer.drain()
        if request.first_audio is None:
            request.first_audio = time.monotonic()
        request.samples += len(audio) // WIDTH

    def _log(self, request: _Request) -> None:
        elapsed = time.monotonic() - request.started
        if self.metrics is not None:
            first = request.first_audio - request.started if request.first_audio is not None else None
            self.metrics.request_finished(
                "wyoming",
                error=request.error.code if request.error else None,
                first_audio=first,
                audio_seconds=request.samples / self.synth.sample_rate,
                elapsed=elapsed,
            )
        kind = "stream" if request.streaming else "synthesize"
        if request.error is not None:
            _LOGGER.warning(
                "%s failed (voice %s, %d chars): %s [%s]",
                kind,
                request.voice,
                request.chars,
                request.error,
                request.error.code,
            )
            return
        audio = request.samples / self.synth.sample_rate
        first = f"{request.first_audio - request.started:.2f} s" if request.first_audio is not None else "-"
        if request.queued is not None:  # (voice and text ready: what the server adds before the engine)
            first += f" (sentences queued after {1000 * (request.queued - request.started):.1f} ms)"
        _LOGGER.info(
            "%s: voice %s, %d chars, first audio after %s, %.2f s of audio in %.2f s (real-time factor %s)",
            kind,
            request.voice,
            request.chars,
            first,
            audio,
            elapsed,
            f"{elapsed / audio:.2f}" if audio else "-",
        )
