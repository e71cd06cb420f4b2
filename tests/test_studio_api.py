"""The voice studio's JSON API end to end: the real server (fixture models, CPU) with --http-port,
a real Wyoming speech-to-text server (pocketsphinx), clips spoken by espeak-ng, and an aiohttp
client that knows only the documented API (docs/studio.md) and Wyoming.

One server (module scope, with a bearer token) serves the tests in order; the last ones stop
the speech-to-text server and restart the studio server in the middle of a tuning.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile
from speech_support import SENTENCES, asr_server, write_recording, write_speech  # noqa: F401
from studio_support import StudioServer, start_studio
from test_server_e2e import read_until, synthesize
from wyoming.info import Describe, Info

TOKEN = "kitchen-s3cret"
CLIP_TEXT = "Please turn on the kitchen lights and close the garage door."


@pytest.fixture(scope="module")
def studio(tmp_path_factory, lina_dir, codec_dir, asr_server):  # noqa: F811
    tmp = tmp_path_factory.mktemp("studio")
    server = start_studio(tmp, lina_dir, codec_dir, "--asr-uri", asr_server.uri, token=TOKEN)
    server.tmp, server.lina_dir, server.codec_dir, server.asr = tmp, lina_dir, codec_dir, asr_server
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_speech(tmp_path_factory.mktemp("clips") / "alice.wav", CLIP_TEXT)


def form(**fields) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for key, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Path):
                data.add_field(key, item.read_bytes(), filename=item.name, content_type="audio/wav")
            else:
                data.add_field(key, str(item))
    return data


async def voices(studio: StudioServer) -> dict[str, dict]:
    async with studio.session() as http, http.get("api/voices") as response:
        assert response.status == 200
        return {v["name"]: v for v in await response.json()}


async def described(studio: StudioServer) -> set[str]:
    async with studio.client() as client:
        await client.write_event(Describe().event())
        events = await read_until(client, "info", studio)
    return {v.name for v in Info.from_event(events[-1]).tts[0].voices}


async def expect_error(response: aiohttp.ClientResponse, status: int, code: str) -> str:
    body = await response.json()
    assert (response.status, body.get("code")) == (status, code), body
    assert body["error"][0].isupper() and body["error"].endswith((".", "?")), body  # a sentence for a person
    return body["error"]


# --- the happy path -----------------------------------------------------------------------
async def test_health_status_and_metrics(studio):
    async with studio.session() as http:
        async with http.get("healthz") as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
        async with http.get("api/status") as response:
            status = await response.json()
        assert status["ready"] and status["speech_to_text"] and not status["default_fixed"]
        async with http.get("metrics") as response:
            text = await response.text()
        assert "lina_batch_rows" in text and "lina_queue_depth" in text and "lina_http_responses_total" in text


async def engine_load(http) -> float:
    """Rows being generated plus rows waiting, from the studio's /metrics."""
    async with http.get("metrics") as response:
        text = await response.text()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(("lina_batch_rows ", "lina_queue_depth "))
    )


async def test_a_long_studio_text_takes_turns_with_wyoming_and_stops_when_the_browser_leaves(studio):
    """The studio door shares the engine on the same terms as a Wyoming client: a 2,000-sentence
    text from the browser does not hold back a Home Assistant request, and closing the page
    removes its remaining sentences from the engine at once."""
    long_text = ". ".join(["Hi"] * 2000)
    async with studio.session() as http:
        request = asyncio.create_task(http.post("api/speak", json={"text": long_text, "voice": "fixture"}))
        deadline = time.monotonic() + 60  # until the studio's sentences are in the engine (2 busy cores: seconds)
        while await engine_load(http) == 0 and not request.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not request.done(), f"the studio request ended early: {request.result().status}"
        assert await engine_load(http) > 0
        events = await asyncio.wait_for(synthesize(studio, "Hello there."), 60)
        assert events[-1].type == "audio-stop" and sum(len(e.payload or b"") for e in events) > 0
        assert not request.done(), "the long text finished first: the test proves nothing"
        request.cancel()  # the browser goes away mid-request
        await asyncio.gather(request, return_exceptions=True)
    async with studio.session() as http:
        for _ in range(100):
            if await engine_load(http) == 0:
                break
            await asyncio.sleep(0.1)
        assert await engine_load(http) == 0, "the closed request's sentences stayed in the engine"
        async with http.post("api/speak", json={"text": "你好 😀", "voice": "fixture"}) as r:
            message = await expect_error(r, 400, "unsupported-text")
            assert "CJK UNIFIED IDEOGRAPH" in message


async def test_the_page_and_its_files(studio):
    async with studio.session(token=None) as http:  # the page loads without the token (it asks for it)
        async with http.get("") as r:
            page = await r.text()
            assert r.status == 200 and "Content-Security-Policy" in r.headers
        assert "<base" not in page and 'src="static/studio.js"' in page  # relative: works under any prefix
        async with http.get("", headers={"X-Ingress-Path": "/api/hassio_ingress/Tok3n"}) as r:
            assert '<base href="/api/hassio_ingress/Tok3n/">' in await r.text()
        async with http.get("", headers={"X-Ingress-Path": '/x"><script>alert(1)</script>'}) as r:
            assert "<base" not in await r.text()
        for name in ("studio.js", "studio.css", "recorder-worklet.js"):
            async with http.get(f"static/{name}") as r:
                assert r.status == 200
        for name in ("..%2F..%2Fapp.py", "..%2F__init__.py", "index.html.bak"):
            async with http.get(f"static/{name}") as r:
                assert r.status == 404


async def test_list_shows_the_voices_and_the_default(studio):
    listed = await voices(studio)
    assert {"default", "fixture"} <= set(listed)
    assert listed["default"]["default"] and not listed["fixture"]["default"]
    assert listed["fixture"]["kind"] == "state" and listed["fixture"]["usable"] and listed["fixture"]["problem"] is None
    assert listed["default"]["seconds"] > 1 and listed["default"]["languages"] == ["en"]


async def test_add_with_a_transcript_then_hear_it_and_find_it_in_wyoming(studio, clip):
    async with studio.session() as http:
        async with http.post(
            "api/voices", data=form(name="alice", audio=clip, text=CLIP_TEXT, description="Alice")
        ) as r:
            assert r.status == 201, await r.text()
            added = await r.json()
        assert added["name"] == "alice" and added["usable"] and added["kind"] == "prompt" and not added["transcribed"]
        assert added["transcript"] == CLIP_TEXT and 2 < added["seconds"] < 6
        async with http.post("api/speak", json={"text": "Hello there. How are you?", "voice": "alice"}) as r:
            assert r.status == 200 and r.content_type == "audio/wav"
            audio, rate = soundfile.read(io.BytesIO(await r.read()), dtype="int16")
    assert rate == 24000 and audio.ndim == 1 and len(audio) > 0
    assert "alice" in await described(studio)  # Home Assistant sees it at its next describe
    events = await synthesize(studio, "Hello.", "alice")
    assert "error" not in [e.type for e in events], studio.stderr()


async def test_add_without_a_transcript_asks_speech_to_text(studio, clip):
    async with studio.session() as http:
        async with http.post("api/transcribe", data=form(audio=clip)) as r:
            assert r.status == 200
            heard = (await r.json())["text"]
        async with http.post("api/voices", data=form(name="bob", audio=clip, language="en")) as r:
            assert r.status == 201, await r.text()
            added = await r.json()
    assert added["transcribed"] and added["transcript"] == heard
    assert len(set(heard.split()) & {"kitchen", "lights", "garage", "door", "close"}) >= 3, heard
    assert (studio.data / "voices" / "bob" / "prompt.txt").read_text().strip() == heard


async def test_default_voice_is_persisted_and_used_by_wyoming(studio, clip):  # (alice: made from clip above)
    async with studio.session() as http:
        async with http.put("api/default-voice", json={"voice": "alice"}) as r:
            assert r.status == 200 and (await r.json())["default_voice"] == "alice"
        listed = await voices(studio)
        assert listed["alice"]["default"] and not listed["default"]["default"]
        events = await synthesize(studio, "Who is speaking?")  # no voice named: the chosen default
        assert "error" not in [e.type for e in events]
        assert "synthesize: voice alice," in studio.stderr()
        async with http.delete("api/voices/alice") as r:
            await expect_error(r, 409, "default-voice")
        async with http.put("api/default-voice", json={"voice": "nobody"}) as r:
            await expect_error(r, 404, "unknown-voice")
        async with http.put("api/default-voice", json={"voice": None}) as r:
            assert (await r.json())["default_voice"] == "default"
    assert "default_voice" not in (studio.data / "settings.yaml").read_text()


async def test_remove(studio, clip):  # (bob: made from clip above)
    async with studio.session() as http:
        async with http.delete("api/voices/bob") as r:
            assert r.status == 204
        async with http.delete("api/voices/bob") as r:
            await expect_error(r, 404, "unknown-voice")
        async with http.post("api/speak", json={"text": "Hello.", "voice": "bob"}) as r:
            await expect_error(r, 404, "unknown-voice")
    assert "bob" not in await voices(studio) and "bob" not in await described(studio)
    assert not (studio.data / "voices" / "bob").exists()


# --- hostile and broken input: a clear 4xx, nothing changed --------------------------------
async def test_refusals_change_nothing(studio, clip, tmp_path):
    before = await voices(studio)
    long_clip = tmp_path / "long.wav"
    soundfile.write(str(long_clip), np.zeros(8000 * 130, np.int16), 8000)  # 130 s: refused from its header
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF" + bytes(65 * 2**20))  # over the 64 MB upload limit
    async with studio.session() as http:
        async with http.post("api/voices", data=form(name="../../evil", audio=clip, text=CLIP_TEXT)) as r:
            await expect_error(r, 400, "bad-name")
        async with http.post("api/voices", data=form(name="con", audio=clip, text=CLIP_TEXT)) as r:
            await expect_error(r, 400, "bad-name")
        async with http.delete("api/voices/..%2F..%2Fsettings.yaml") as r:
            await expect_error(r, 400, "bad-name")
        async with http.post("api/voices/..%2Fx/tune", data=form(audio=clip)) as r:
            await expect_error(r, 400, "bad-name")
        async with http.post("api/voices", data=form(name="alice", audio=clip, text=CLIP_TEXT)) as r:
            await expect_error(r, 409, "voice-exists")
        async with http.post("api/voices", data=form(name="huge", audio=big, text=CLIP_TEXT)) as r:
            assert "limit" in await expect_error(r, 413, "too-large")
        async with http.post("api/voices", data=form(name="longone", audio=long_clip, text=CLIP_TEXT)) as r:
            message = await expect_error(r, 413, "audio-file-error")
            assert "long.wav" in message and "130 s" in message
        async with http.post("api/voices", data=form(name="noclip", text=CLIP_TEXT)) as r:
            await expect_error(r, 400, "no-audio")
        async with http.post("api/voices", data=form(name="wordy", audio=clip, text=" ".join([CLIP_TEXT] * 90))) as r:
            message = await expect_error(r, 400, "voice-error")  # a transcript the model can never take
            assert "990 words" in message and "at most about" in message
        async with http.post("api/speak", json={"text": "x" * 20_000, "voice": "fixture"}) as r:
            await expect_error(r, 400, "text-too-long")
        async with http.post("api/speak", data=b"not json", headers={"Content-Type": "application/json"}) as r:
            await expect_error(r, 400, "bad-request")
    async with studio.session(origin="http://evil.example") as http:
        async with http.post("api/voices", data=form(name="eve", audio=clip, text=CLIP_TEXT)) as r:
            await expect_error(r, 403, "cross-origin")
        async with http.delete("api/voices/alice") as r:
            await expect_error(r, 403, "cross-origin")
        async with http.get("api/voices") as r:  # reading is not changing anything
            assert r.status == 200
    async with studio.session(origin=studio.url.rstrip("/")) as http:  # the page itself
        async with http.put("api/default-voice", json={"voice": None}) as r:
            assert r.status == 200
    for token in ("wrong", None):
        async with studio.session(token=token) as http:
            async with http.delete("api/voices/alice") as r:
                await expect_error(r, 401, "unauthorized")
                assert r.headers["WWW-Authenticate"] == "Bearer"
            async with http.get("metrics") as r:
                assert r.status == 401
            async with http.get("healthz") as r:  # health checks need no token
                assert r.status == 200
    assert await voices(studio) == before
    assert not (studio.data / "studio" / "uploads").exists() or not any((studio.data / "studio" / "uploads").iterdir())
    assert not (studio.tmp / "evil").exists() and not (studio.data / "evil").exists()


async def test_client_file_names_are_never_paths(studio, clip):
    data = aiohttp.FormData()
    data.add_field("name", "henry")
    data.add_field("text", CLIP_TEXT)
    data.add_field("audio", clip.read_bytes(), filename="../../../../escape.wav", content_type="audio/wav")
    async with studio.session() as http:
        async with http.post("api/voices", data=data) as r:
            assert r.status == 201, await r.text()
        async with http.delete("api/voices/henry") as r:
            assert r.status == 204
    assert not list(studio.tmp.parent.rglob("escape.wav"))


# --- tuned voices ------------------------------------------------------------------------
async def events_of(studio: StudioServer, job: str, until=None) -> list[dict]:
    """The job's server-sent events until it ends (or ``until(event)`` is true)."""
    seen = []
    async with studio.session() as http, http.get(f"api/jobs/{job}/events") as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        async with asyncio.timeout(180):
            async for line in r.content:
                if line.startswith(b"data: "):
                    seen.append(json.loads(line[6:]))
                    if until is not None and until(seen[-1]):
                        break
    return seen


async def test_tune_from_a_long_recording_with_progress(studio, tmp_path):
    write_recording(tmp_path / "memo.wav", SENTENCES[:5])
    async with studio.session() as http:
        async with http.post("api/voices/carol/tune", data=form(audio=tmp_path / "memo.wav", max_steps=24)) as r:
            assert r.status == 202, await r.text()
            job = (await r.json())["job"]
    seen = await events_of(studio, job)
    assert seen[-1]["state"] == "done", (seen[-1], studio.stderr())
    phases = [e["phase"] for e in seen]
    assert "transcribing" in phases and "tuning" in phases, phases
    progress = [e["progress"] for e in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(e.get("eta_seconds") is not None for e in seen if e["phase"] == "tuning")
    listed = await voices(studio)
    assert listed["carol"]["kind"] == "state" and listed["carol"]["usable"]
    async with studio.session() as http:
        async with http.post("api/speak", json={"text": "Hello.", "voice": "carol"}) as r:
            assert r.status == 200
        async with http.get(f"api/jobs/{job}") as r:
            assert (await r.json())["state"] == "done"
        async with http.delete(f"api/jobs/{job}") as r:  # dismiss a finished job
            assert r.status == 204
        async with http.get(f"api/jobs/{job}") as r:
            await expect_error(r, 404, "unknown-job")
        async with http.post("api/voices/carol/tune", data=form(audio=tmp_path / "memo.wav")) as r:
            await expect_error(r, 409, "voice-exists")  # already tuned: overwrite must be asked for


async def test_cancel_a_tuning_leaves_no_half_voice(studio, tmp_path):
    write_recording(tmp_path / "memo.wav", SENTENCES[:3])
    async with studio.session() as http:
        async with http.post("api/voices/dave/tune", data=form(audio=tmp_path / "memo.wav", max_steps=100_000)) as r:
            job = (await r.json())["job"]
        await events_of(studio, job, until=lambda e: e["phase"] == "tuning" and (e.get("step") or 0) >= 1)
        assert (await voices(studio))["dave"]["tuning_job"] == job
        async with http.delete("api/voices/dave") as r:
            await expect_error(r, 409, "voice-busy")
        async with http.delete(f"api/jobs/{job}") as r:
            assert r.status == 202
    seen = await events_of(studio, job)
    assert seen[-1]["state"] == "cancelled"
    assert "dave" not in await voices(studio)
    assert not (studio.data / "voices" / "dave").exists()
    assert not list((studio.data / "studio" / "jobs" / job).glob("inputs/*"))


async def test_speech_to_text_down(studio, clip):
    studio.asr.stop()
    async with studio.session() as http:
        async with http.post("api/voices", data=form(name="erin", audio=clip)) as r:
            message = await expect_error(r, 502, "transcription-failed")
        assert "Cannot reach the speech-to-text server" in message
        async with http.post("api/transcribe", data=form(audio=clip)) as r:
            await expect_error(r, 502, "transcription-failed")
    assert "erin" not in await voices(studio)


async def test_a_tuning_continues_after_a_restart(studio, tmp_path):
    studio.stop()  # free the cores: the tuning below runs in the restarted server
    tmp, data = studio.tmp, studio.data
    # pairs with transcripts: no speech-to-text needed (it is down); 2 steps per checkpoint
    clips = [write_speech(tmp_path / f"c{i}.wav", s) for i, s in enumerate(SENTENCES[:3])]
    restarted = start_studio(tmp, studio.lina_dir, studio.codec_dir, token=TOKEN)
    try:
        data_form = aiohttp.FormData()
        for path, text in zip(clips, SENTENCES[:3]):
            data_form.add_field("audio", path.read_bytes(), filename=path.name, content_type="audio/wav")
            data_form.add_field("text", text)
        data_form.add_field("max_steps", "400")
        data_form.add_field("eval_every", "2")
        async with restarted.session() as http:
            async with http.post("api/voices/frank/tune", data=data_form) as r:
                assert r.status == 202, await r.text()
                job = (await r.json())["job"]
        first = await events_of(restarted, job, until=lambda e: (e.get("step") or 0) >= 4)
        restarted.stop()  # SIGTERM: the child saves its checkpoint; the job stays to be continued
        assert first[-1]["state"] == "running"
        again = start_studio(tmp, studio.lina_dir, studio.codec_dir, token=TOKEN)
        try:
            async with again.session() as http:  # this server has no --asr-uri
                async with http.get("api/status") as r:
                    assert not (await r.json())["speech_to_text"]
                async with http.post("api/voices", data=form(name="gina", audio=clips[0])) as r:
                    assert "--asr-uri" in await expect_error(r, 400, "no-speech-to-text")
                async with http.post("api/voices/gina/tune", data=form(audio=clips[0])) as r:
                    await expect_error(r, 400, "no-speech-to-text")
            seen = await events_of(again, job, until=lambda e: (e.get("step") or 0) >= first[-1]["step"] + 2)
            assert seen[-1]["state"] == "running", seen[-1]
            log = (data / "studio" / "jobs" / job / "tuning.log").read_text()
            assert "resuming initial-state tuning at step" in log, log[-3000:]
            async with again.session() as http, http.delete(f"api/jobs/{job}") as r:
                assert r.status == 202
            assert (await events_of(again, job))[-1]["state"] == "cancelled"
        finally:
            again.stop()
    finally:
        restarted.stop()
    assert not (data / "voices" / "frank").exists()
