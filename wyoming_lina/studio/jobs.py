"""Tuning jobs started from the studio: each runs ``wyoming-lina voice tune`` as a child process.

Why a child process: tuning holds a second copy of the model and its gradients for minutes,
and a crash in it (out of memory, a bad recording, a driver error) must not take the server
that answers Home Assistant down with it. The serving engine keeps its model and its GPU
stream to itself; the child reports where it is through its ``--progress-file`` and is
stopped with a signal. Jobs run one at a time, in the order they were asked for.

A job lives in ``<data_dir>/studio/jobs/<id>/``: ``job.json`` (what was asked, its state),
the uploaded recordings (deleted once the job ends), ``progress.json`` (written by the child)
and ``tuning.log``. After a restart, a job that was queued or running is started again; the
child resumes from its checkpoint and reuses the transcripts it already has. A job that fails
or is cancelled leaves no half voice: a voice made for it is removed, an existing voice only
loses the unfinished tuning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..voices.files import atomic_write_text
from ..voices.progress import read_progress
from ..voices.recordings import checkpoint_file, discard_tuning, unfinished

_LOGGER = logging.getLogger(__name__)
JOB_FILE, PROGRESS_FILE, LOG_FILE = "job.json", "progress.json", "tuning.log"
ACTIVE, FINISHED = ("queued", "running"), ("done", "failed", "cancelled")
PROGRESS_KEYS = ("phase", "progress", "eta_seconds", "message", "step", "max_steps")
POLL_SECONDS = 0.5
CANCEL_GRACE = 10.0  # seconds a cancelled child gets to exit before it is killed


@dataclass
class TuningCommand:
    """How this server starts ``voice tune``: its data dir, model files, device, speech-to-text."""

    data_dir: Path
    model_args: list[str] = field(default_factory=list)
    asr_uri: str | None = None
    python: str = sys.executable


class TuningJobs:
    def __init__(self, root: Path, command: TuningCommand, store, *, max_waiting: int = 4):
        self.root = root
        self.command = command
        self.store = store
        self.max_waiting = max_waiting
        self.jobs: dict[str, dict] = {}
        self._changed: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    # --- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._changed, self._wake = asyncio.Condition(), asyncio.Event()
        self.root.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.root.glob(f"*/{JOB_FILE}")):
            try:
                job = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                _LOGGER.warning("ignoring the tuning job in %s: %s", path.parent, err)
                continue
            if job.get("state") in ACTIVE and job.get("cancel_requested"):
                discard_tuning(self.store, job["voice"], remove_voice=not job["voice_existed"])
                shutil.rmtree(path.parent / "inputs", ignore_errors=True)
                job.update(state="cancelled", message="cancelled")
                atomic_write_text(path, json.dumps(job))
            if job.get("state") == "running":
                _stop_orphan(job, path.parent)
                job.update(state="queued", message="continuing after a restart")
                _LOGGER.info("tuning job %s (voice %s) continues after the restart", job["id"], job["voice"])
            job["version"] = 0
            self.jobs[job["id"]] = job
        self._runner = asyncio.create_task(self._run_all(), name="studio tuning jobs")

    async def stop(self, timeout: float = 5.0) -> None:
        """Server shutdown: the running child saves its checkpoint (SIGINT) and the job stays
        'running', to continue at the next start."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    # --- asking ----------------------------------------------------------------------------
    def create(self, voice: str, inputs: list[tuple[Path, str | None]], settings: dict, *, voice_existed: bool) -> dict:
        """A new queued job; the input files are moved into its folder."""
        if sum(1 for j in self.jobs.values() if j["state"] in ACTIVE) >= self.max_waiting:
            raise JobsBusy(f"{self.max_waiting} tunings are already waiting; try again when one has finished")
        job_id = uuid.uuid4().hex[:12]
        folder = self.root / job_id
        (folder / "inputs").mkdir(parents=True)
        files = []
        for number, (path, text) in enumerate(inputs, 1):
            target = folder / "inputs" / f"recording-{number}{path.suffix}"
            os.replace(path, target)
            if text is not None:
                atomic_write_text(target.with_suffix(".txt"), " ".join(text.split()) + "\n")
            files.append(target.name)
        now = time.time()
        job = {
            "id": job_id, "voice": voice, "state": "queued", "created": now, "updated": now,
            "files": files, "transcribed": all(t is not None for _, t in inputs), "settings": settings,
            "voice_existed": voice_existed, "phase": "waiting", "progress": 0.0, "message": "waiting to start",
            "error": None, "version": 0,
        }  # fmt: skip
        self.jobs[job_id] = job
        self._save(job)
        self._wake.set()
        return job

    def get(self, job_id: str) -> dict | None:
        return self.jobs.get(job_id)

    def list(self) -> list[dict]:
        return sorted(self.jobs.values(), key=lambda j: j["created"])

    def active_for(self, voice: str) -> dict | None:
        key = voice.casefold()
        return next((j for j in self.jobs.values() if j["state"] in ACTIVE and j["voice"].casefold() == key), None)

    async def cancel(self, job_id: str) -> dict:
        job = self.jobs[job_id]
        if job["state"] == "queued":
            await self._end(job, "cancelled", "cancelled", discard=False)
        elif job["state"] == "running":
            job["cancel_requested"] = True
            self._touch(job, message="cancelling")
            if self._proc is not None and self._proc.returncode is None:
                self._proc.send_signal(signal.SIGTERM)
        return job

    def dismiss(self, job_id: str) -> None:
        job = self.jobs.pop(job_id)
        shutil.rmtree(self.root / job["id"], ignore_errors=True)

    async def wait_change(self, job_id: str, version: int, timeout: float) -> dict | None:
        """The job once its version differs from ``version`` (or after ``timeout``)."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.jobs.get(job_id, {}).get("version", -1) != version), timeout
                )
            except asyncio.TimeoutError:
                pass
        return self.jobs.get(job_id)

    # --- running ---------------------------------------------------------------------------
    async def _run_all(self) -> None:
        while True:
            waiting = [j for j in self.list() if j["state"] == "queued"]
            if not waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._run(waiting[0])
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a bug here must not stop the jobs after it
                _LOGGER.exception("tuning job %s", waiting[0]["id"])
                await self._end(waiting[0], "failed", "tuning failed", error=str(err))

    async def _run(self, job: dict) -> None:
        folder = self.root / job["id"]
        (folder / PROGRESS_FILE).unlink(missing_ok=True)
        command = await asyncio.to_thread(self._command_for, job)
        self._touch(job, state="running", message="starting")
        self._save(job)
        _LOGGER.info("tuning job %s: %s", job["id"], " ".join(command))
        with open(folder / LOG_FILE, "ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *command, stdout=log, stderr=log, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
        proc = self._proc
        job["pid"] = proc.pid
        self._save(job)
        cancel_sent = None
        while proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
            self._refresh(job)
            if job.get("cancel_requested"):
                cancel_sent = cancel_sent or time.monotonic()
                if time.monotonic() - cancel_sent > CANCEL_GRACE and proc.returncode is None:
                    proc.kill()
        self._proc = None
        self._refresh(job)
        if self._stopping and not job.get("cancel_requested"):
            return  # stays 'running': continues at the next start
        progress = read_progress(folder / PROGRESS_FILE) or {}
        if job.get("cancel_requested"):
            await self._end(job, "cancelled", "cancelled")
        elif proc.returncode == 0 and progress.get("state") == "done":
            await self._end(job, "done", f"the voice {job['voice']} is ready", discard=False)
        else:
            error = progress.get("error") or _last_line(folder / LOG_FILE) or f"exit code {proc.returncode}"
            await self._end(job, "failed", "tuning failed", error=error)

    def _command_for(self, job: dict) -> list[str]:
        folder, settings, voice = self.root / job["id"], job["settings"], job["voice"]
        inputs = [folder / "inputs" / name for name in job["files"]]
        command = [self.command.python, "-m", "wyoming_lina", "voice", "tune", voice]
        if job["transcribed"]:
            command += ["--data", str(folder / "inputs")]
        else:
            command += [arg for path in inputs for arg in ("--recording", str(path))]
            if self.command.asr_uri:
                command += ["--asr-uri", self.command.asr_uri]
        command += ["--data-dir", str(self.command.data_dir), *self.command.model_args]
        command += ["--progress-file", str(folder / PROGRESS_FILE), "--no-progress"]
        for key, option in (
            ("max_steps", "--max-steps"),
            ("max_minutes", "--max-minutes"),
            ("eval_every", "--eval-every"),
        ):
            if settings.get(key) is not None:
                command += [option, str(settings[key])]
        if settings.get("language"):
            command += ["--language", settings["language"]]
        if settings.get("description"):
            command += ["--description", settings["description"]]
        if checkpoint_file(self.store, voice).is_file():
            command.append("--resume")
        elif settings.get("overwrite") or unfinished(self.store, voice):
            command.append("--overwrite")
        return command

    async def _end(
        self, job: dict, state: str, message: str, *, error: str | None = None, discard: bool = True
    ) -> None:
        if discard:
            await asyncio.to_thread(discard_tuning, self.store, job["voice"], remove_voice=not job["voice_existed"])
        shutil.rmtree(self.root / job["id"] / "inputs", ignore_errors=True)
        extra = {"progress": 1.0, "eta_seconds": None} if state == "done" else {"eta_seconds": None}
        self._touch(job, state=state, message=message, error=error, **extra)
        self._save(job)
        _LOGGER.info("tuning job %s (voice %s): %s%s", job["id"], job["voice"], state, f": {error}" if error else "")

    def _refresh(self, job: dict) -> None:
        progress = read_progress(self.root / job["id"] / PROGRESS_FILE)
        if progress is None:
            return
        update = {k: progress.get(k) for k in PROGRESS_KEYS if progress.get(k) != job.get(k)}
        if "eta_seconds" not in progress and job.get("eta_seconds") is not None:
            update["eta_seconds"] = None
        if update and not job.get("cancel_requested"):
            self._touch(job, **update)

    def _touch(self, job: dict, **changes) -> None:
        job.update(changes, updated=time.time(), version=job.get("version", 0) + 1)
        if self._changed is not None:
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _save(self, job: dict) -> None:
        folder = self.root / job["id"]
        if folder.is_dir():
            atomic_write_text(folder / JOB_FILE, json.dumps({k: v for k, v in job.items() if k != "version"}))


class JobsBusy(Exception):
    pass


def _stop_orphan(job: dict, folder: Path) -> None:
    """A child left running by a server that was killed (SIGKILL does not reach it): stop it
    before the job starts again, so two children never write one voice. Only a process whose
    command line names this job's progress file is touched."""
    pid = job.get("pid")
    if not isinstance(pid, int):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return  # gone (or no /proc): nothing to stop
    if str(folder / PROGRESS_FILE).encode() in cmdline:
        _LOGGER.warning("stopping the tuning process %d left from before the restart", pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _last_line(path: Path) -> str | None:
    """The child's last 'error: ...' line (its one-line reason), else its last line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else (lines[-1] if lines else None)


def public_view(job: dict) -> dict:
    """What the API shows of a job."""
    keys = ("id", "voice", "state", "phase", "progress", "eta_seconds", "message", "error", "step", "max_steps")
    return {k: job.get(k) for k in keys} | {"created": job["created"], "updated": job["updated"]}
