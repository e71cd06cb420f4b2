"""The studio's JSON API for voices and speech (docs/studio.md lists every route).

Handlers translate HTTP into calls on the named entry points of the rest of the server and
nothing else: the Synthesizer for speaking (the same engine, batch and limits as Wyoming
requests), the VoiceStore's public methods for voices, the Wyoming transcriber for
transcripts. Work that reads files or encodes a clip runs in a worker thread, so the event
loop (which also answers Home Assistant) never waits for it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiohttp import web

from ..codec.audio import CODEC_RATE
from ..errors import LinaError
from ..server.asr import NoTranscriberError, TranscriptionError
from ..server.speak import wav_bytes
from ..voices.clips import PROMPT_LIMITS, prepare_clip
from ..voices.names import name_key, name_problem
from . import uploads
from .errors import ApiError, sentence, status_for


@dataclass
class StudioContext:
    """What the handlers may use: shared server objects, passed in by the wiring."""

    data_dir: Path
    store: object  # VoiceStore
    voices: object  # DefaultingVoices (the default-voice decision)
    synthesizer: object  # Synthesizer
    transcriber: object | None  # WyomingTranscriber, or None without --asr-uri
    jobs: object  # TuningJobs
    metrics: object  # ServerMetrics
    token: str | None = None
    max_speaking: int = 16  # /api/speak requests at once (more: 503 overloaded); the engine queues the rest
    ready: bool = False  # the model is loaded (speech is served)
    serving: object | None = None  # ServingState: start-up phase and how steps run (for /healthz)
    speaking: int = 0

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "studio" / "uploads"


def context(request: web.Request) -> StudioContext:
    return request.app["studio"]


def checked_name(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise ApiError(400, "bad-name", problem[0].upper() + problem[1:] + ".")
    return name


def _voice_rows(ctx: StudioContext) -> list[dict]:
    infos = ctx.store.list()
    default = name_key(ctx.voices.default_name(infos))
    rows = []
    for info in infos:
        details = ctx.store.show(info.name)
        prompt = details.get("prompt") or {}
        job = ctx.jobs.active_for(info.name)
        rows.append(
            {
                "name": info.name,
                "kind": info.kind,
                "languages": list(info.languages),
                "description": info.description,
                "usable": info.installed,
                "problem": info.problem or None,
                "default": name_key(info.name) == default,
                "seconds": prompt.get("seconds"),
                "transcript": prompt.get("transcript"),
                "created": details.get("created") or None,
                "editable": details.get("folder") is not None,
                "tuning_job": job["id"] if job else None,
            }
        )
    return rows


async def status(request: web.Request) -> web.Response:
    ctx = context(request)
    voices = ctx.voices
    return web.json_response(
        {
            "ready": ctx.ready,
            "speech_to_text": ctx.transcriber is not None,
            "default_voice": await asyncio.to_thread(voices.default_name),
            "default_fixed": bool(voices.fixed),
            "limits": {
                "clip_bytes": PROMPT_LIMITS.max_file_bytes,
                "clip_seconds": PROMPT_LIMITS.max_seconds,
                "text_chars": ctx.synthesizer.settings.max_text_chars,
            },
        }
    )


async def list_voices(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(_voice_rows, context(request)))


async def add_voice(request: web.Request) -> web.Response:
    ctx = context(request)
    upload = await uploads.receive(request, ctx.uploads_dir, max_file_bytes=PROMPT_LIMITS.max_file_bytes)
    try:
        fields = upload.fields
        name = checked_name(fields.get("name", "").strip())
        if await asyncio.to_thread(ctx.store.__contains__, name):
            raise ApiError(409, "voice-exists", f"There is already a voice called {name}. Choose another name.")
        if not upload.files:
            raise ApiError(400, "no-audio", "Add a recording of the voice (the 'audio' file).")
        audio = upload.files[0].path
        language = fields.get("language", "").strip() or None
        text = " ".join(fields.get("text", "").split())
        transcribed = not text
        try:
            if transcribed:
                text = await _transcribe_file(ctx, audio, language)
            result = await asyncio.to_thread(
                ctx.store.add,
                name,
                audio=audio,
                text=text,
                languages=[language] if language else None,
                description=fields.get("description", "").strip(),
            )
        except LinaError as err:  # name the file as the user knows it, not as it was stored
            message = sentence(str(err).replace(audio.name, upload.files[0].filename))
            raise ApiError(status_for(err), err.code, message) from err
    finally:
        upload.discard()
    row = next(r for r in await asyncio.to_thread(_voice_rows, ctx) if name_key(r["name"]) == name_key(name))
    body = {**row, "warnings": list(result.warnings), "transcript": text, "transcribed": transcribed}
    return web.json_response(body, status=201)


async def remove_voice(request: web.Request) -> web.Response:
    ctx = context(request)
    name = checked_name(request.match_info["name"])
    if ctx.jobs.active_for(name):
        raise ApiError(409, "voice-busy", f"The voice {name} is being tuned. Cancel the tuning first.")
    infos = await asyncio.to_thread(ctx.store.list)
    if not any(name_key(i.name) == name_key(name) for i in infos):
        raise ApiError(404, "unknown-voice", f"There is no voice called {name}.")
    if name_key(await asyncio.to_thread(ctx.voices.default_name, infos)) == name_key(name):
        raise ApiError(
            409,
            "default-voice",
            f"The voice {name} is the default voice. Make another voice the default before removing it.",
        )
    info = await asyncio.to_thread(ctx.store.remove, name)
    chosen = ctx.voices.preferences.default_voice()
    if chosen and name_key(chosen) == name_key(info.name):
        await asyncio.to_thread(ctx.voices.preferences.set_default_voice, None)
    return web.Response(status=204)


async def set_default_voice(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await _json(request)
    name = body.get("voice")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "bad-request", "'voice' must be a voice name, or null for the built-in voice.")
    if ctx.voices.fixed:
        raise ApiError(
            409,
            "default-fixed",
            f"The default voice is fixed by the server's --voice option ({ctx.voices.fixed}). Change it there.",
        )
    if name:
        name = checked_name(name)
        info = next((i for i in await asyncio.to_thread(ctx.store.list) if name_key(i.name) == name_key(name)), None)
        if info is None:
            raise ApiError(404, "unknown-voice", f"There is no voice called {name}.")
        if not info.installed:
            raise ApiError(400, "voice-not-usable", sentence(f"The voice {info.name} cannot be used: {info.problem}"))
        name = info.name
    await asyncio.to_thread(ctx.voices.preferences.set_default_voice, name or None)
    return web.json_response({"default_voice": await asyncio.to_thread(ctx.voices.default_name)})


async def speak(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await _json(request)
    text, voice = body.get("text"), body.get("voice")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "no-text", "Type something for the voice to say.")
    if voice is not None and not isinstance(voice, str):
        raise ApiError(400, "bad-request", "'voice' must be a voice name.")
    if not ctx.ready:
        raise ApiError(503, "starting", "The server is still starting up. Try again in a minute.")
    if ctx.speaking >= ctx.max_speaking:
        raise ApiError(503, "overloaded", f"The studio is already speaking {ctx.speaking} texts. Try again shortly.")
    ctx.speaking += 1
    try:
        # one owner per browser (peer address): its texts take one turn among the Wyoming clients'
        speaking = asyncio.ensure_future(_speak(ctx, text, voice, owner=f"studio {request.remote}"))
        gone = asyncio.ensure_future(_until_disconnected(request))
        try:
            await asyncio.wait({speaking, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not speaking.done():  # the browser left (or this handler was cancelled): free the engine now
                speaking.cancel()
                await asyncio.gather(speaking, return_exceptions=True)
        if not speaking.done() or speaking.cancelled():
            raise ApiError(499, "client-gone", "The browser closed the request.")
        return speaking.result()
    finally:
        ctx.speaking -= 1


async def _until_disconnected(request: web.Request, poll: float = 0.25) -> None:
    """Returns once the client's connection is gone. aiohttp does not cancel a handler when its
    client leaves (handler cancellation is off: voice uploads must finish what they started), so
    the speak handler watches for it and stops its sentences in the engine itself."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(poll)


async def _speak(ctx: StudioContext, text: str, voice: str | None, owner: str) -> web.Response:
    synth = ctx.synthesizer
    started = time.monotonic()
    first_audio, chunks, error = None, [], None
    try:
        resolved = await asyncio.to_thread(synth.resolve_voice, voice or None)
        stream = synth.open_stream(resolved, owner=owner)
        try:
            stream.add_text(text)
            stream.finish()
            async for chunk in stream:
                if first_audio is None:
                    first_audio = time.monotonic() - started
                chunks.append(chunk)
        finally:
            stream.cancel()
    except Exception as err:
        error = getattr(err, "code", "synthesis-failed")
        raise
    finally:
        samples = sum(len(c) for c in chunks)
        ctx.metrics.request_finished(
            "http", error=error, first_audio=first_audio, audio_seconds=samples / synth.sample_rate,
            elapsed=time.monotonic() - started,
        )  # fmt: skip
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return web.Response(body=wav_bytes(audio, synth.sample_rate), content_type="audio/wav")


async def transcribe(request: web.Request) -> web.Response:
    ctx = context(request)
    if ctx.transcriber is None:
        raise NoTranscriberError()
    upload = await uploads.receive(request, ctx.uploads_dir, max_file_bytes=PROMPT_LIMITS.max_file_bytes)
    try:
        if not upload.files:
            raise ApiError(400, "no-audio", "Send the recording as the 'audio' file.")
        language = upload.fields.get("language", "").strip() or None
        text = await _transcribe_file(ctx, upload.files[0].path, language)
    finally:
        upload.discard()
    return web.json_response({"text": text})


async def _transcribe_file(ctx: StudioContext, path: Path, language: str | None) -> str:
    """The words in an uploaded clip, prepared (checked, trimmed) exactly as ``voice add`` prepares it,
    so the page's "fill in" and an add without text hear the same audio."""
    if ctx.transcriber is None:
        raise NoTranscriberError()
    clip = await asyncio.to_thread(prepare_clip, path, PROMPT_LIMITS)
    text = await ctx.transcriber.transcribe(clip.samples, CODEC_RATE, language)
    if not any(ch.isalpha() for ch in text):
        raise TranscriptionError("speech-to-text heard no words in the recording; type what is said instead")
    return text


async def _json(request: web.Request) -> dict:
    try:
        body = await request.json()
    except ValueError as err:
        raise ApiError(400, "bad-request", "The request body must be JSON.") from err
    if not isinstance(body, dict):
        raise ApiError(400, "bad-request", "The request body must be a JSON object.")
    return body
