"""The studio's API for tuned voices: start a tuning from recordings, follow it, cancel it."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from ..errors import LinaError
from ..server.asr import NoTranscriberError
from ..voices.clips import TRAINING_LIMITS, check_file
from ..voices.names import name_key
from ..voices.recordings import RECORDING_LIMITS, check_recording, existing_voice
from . import uploads
from .api import checked_name, context
from .errors import ApiError, sentence, status_for
from .jobs import FINISHED, JobsBusy, public_view

MAX_RECORDINGS = 8
KEEPALIVE_SECONDS = 15.0


def _number(fields: dict, key: str, kind, low, high):
    value = fields.get(key, "").strip()
    if not value:
        return None
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ApiError(400, "bad-request", f"'{key}' must be a number from {low} to {high}.")
    return number


def _existing_state(store, name: str) -> bool:
    info = next((i for i in store.list() if name_key(i.name) == name_key(name)), None)
    return info is not None and "state" in info.kind and info.installed


async def start_tuning(request: web.Request) -> web.Response:
    ctx = context(request)
    name = checked_name(request.match_info["name"])
    if ctx.jobs.active_for(name):
        raise ApiError(409, "voice-busy", f"The voice {name} is already being tuned.")
    upload = await uploads.receive(
        request,
        ctx.uploads_dir,
        max_file_bytes=RECORDING_LIMITS.max_file_bytes,
        max_files=MAX_RECORDINGS,
        max_total_bytes=2 * RECORDING_LIMITS.max_file_bytes,
    )
    try:
        fields = upload.fields
        if not upload.files:
            raise ApiError(400, "no-audio", "Add at least one recording of the voice.")
        texts = [" ".join(f.after.get("text", "").split()) or None for f in upload.files]
        if any(texts) and not all(texts):
            raise ApiError(400, "bad-request", "Give a transcript for every recording, or for none of them.")
        if not any(texts) and ctx.transcriber is None:
            raise NoTranscriberError()
        overwrite = fields.get("overwrite", "").strip().lower() in ("1", "true", "yes", "on")
        settings = {
            "max_steps": _number(fields, "max_steps", int, 1, 100_000),
            "max_minutes": _number(fields, "max_minutes", float, 0.1, 24 * 60),
            "eval_every": _number(fields, "eval_every", int, 1, 10_000),
            "language": fields.get("language", "").strip() or None,
            "description": fields.get("description", "").strip() or None,
            "overwrite": overwrite,
        }

        def check() -> bool:
            for file, text in zip(upload.files, texts):
                try:
                    check_file(file.path, TRAINING_LIMITS) if text else check_recording(file.path)
                except LinaError as err:
                    raise ApiError(status_for(err), err.code, sentence(f"The file {file.filename}: {err}")) from err
            try:
                entry = ctx.store.entry(name)
            except LinaError:
                entry = None
            if entry is not None and entry.folder is None:
                raise ApiError(
                    409, "voice-exists", f"The voice {entry.name} is defined in a voices file; choose another name."
                )
            if _existing_state(ctx.store, name) and not overwrite:
                raise ApiError(
                    409,
                    "voice-exists",
                    f"The voice {name} is already a tuned voice. Ask to replace it (overwrite) or choose another name.",
                )
            return existing_voice(ctx.store, name)

        voice_existed = await asyncio.to_thread(check)
        try:
            job = ctx.jobs.create(
                name, [(f.path, t) for f, t in zip(upload.files, texts)], settings, voice_existed=voice_existed
            )
        except JobsBusy as err:
            raise ApiError(503, "busy", str(err)) from err
    finally:
        upload.discard()
    return web.json_response({"job": job["id"], **public_view(job)}, status=202)


def _job(request: web.Request) -> dict:
    job = context(request).jobs.get(request.match_info["job"])
    if job is None:
        raise ApiError(404, "unknown-job", "There is no such tuning job (it may have been dismissed).")
    return job


async def list_jobs(request: web.Request) -> web.Response:
    return web.json_response([public_view(j) for j in context(request).jobs.list()])


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(public_view(_job(request)))


async def delete_job(request: web.Request) -> web.Response:
    """Cancels a job that is waiting or running (202); dismisses one that has ended (204)."""
    jobs, job = context(request).jobs, _job(request)
    if job["state"] in FINISHED:
        jobs.dismiss(job["id"])
        return web.Response(status=204)
    await jobs.cancel(job["id"])
    return web.json_response(public_view(job), status=202)


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the job as JSON at once and at every change, until it ends."""
    jobs, job = context(request).jobs, _job(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    version = None
    while job is not None:
        if job.get("version") != version:
            version = job.get("version")
            await response.write(f"data: {json.dumps(public_view(job))}\n\n".encode())
            if job["state"] in FINISHED:
                break
        else:
            await response.write(b": still here\n\n")
        job = await jobs.wait_change(job["id"], version, KEEPALIVE_SECONDS)
    await response.write_eof()
    return response
