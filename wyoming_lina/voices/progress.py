"""A tuning's progress as a small JSON file, for whoever watches it (the studio, a script).

``voice tune --progress-file FILE`` rewrites FILE (atomically, at most a few times a second)
with where the run is::

    {"state": "running", "phase": "tuning", "progress": 0.62, "eta_seconds": 140,
     "message": "step 310 of 500", "step": 310, "max_steps": 500, "resumable": true, ...}

``state`` is ``running``, ``done``, ``failed`` (with ``error``) or ``interrupted``;
``progress`` (0..1) weighs the phases by their usual cost; ``resumable`` says a checkpoint
exists, so ``--resume`` continues from it. A reader never sees half a file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .files import atomic_write_text

# Share of the whole run each phase usually takes (tuning dominates on every device).
PHASES = {"transcribing": 0.25, "encoding": 0.05, "tuning": 0.70}
MIN_INTERVAL = 0.25  # seconds between writes (the last one is always written)


class ProgressFile:
    def __init__(self, path: Path | None, *, with_recordings: bool):
        self.path = path
        self.phases = dict(PHASES) if with_recordings else {"encoding": 0.05, "tuning": 0.95}
        self.data: dict = {"state": "running", "phase": "starting", "progress": 0.0, "message": "starting"}
        self._written = 0.0
        self._tuning_started: tuple[float, int] | None = None  # (time, step) of the first step of this run

    def phase(self, name: str, fraction: float, message: str, **extra) -> None:
        done = 0.0
        for phase, weight in self.phases.items():
            if phase == name:
                done += weight * min(1.0, max(0.0, fraction))
                break
            done += weight
        self.data.update(phase=name, progress=round(min(done, 0.999), 4), message=message, **extra)
        if name != "tuning":
            self.data.pop("eta_seconds", None)
        self._write()

    def step(self, step: int, max_steps: int, resumable: bool) -> None:
        now = time.monotonic()
        if self._tuning_started is None:
            self._tuning_started = (now, step)
        started, first = self._tuning_started
        if step > first:
            per_step = (now - started) / (step - first)
            self.data["eta_seconds"] = round(per_step * max(0, max_steps - step))
        self.phase("tuning", step / max(1, max_steps), f"step {step} of at most {max_steps}", step=step,
                   max_steps=max_steps, resumable=resumable)  # fmt: skip

    def finish(self, state: str, message: str, error: str | None = None, resumable: bool = False) -> None:
        self.data.update(state=state, message=message, resumable=resumable)
        self.data.pop("eta_seconds", None)
        if state == "done":
            self.data["progress"] = 1.0
        if error:
            self.data["error"] = error
        self._write(force=True)

    def _write(self, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._written < MIN_INTERVAL:
            return
        self._written = now
        self.data["updated"] = time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data))


def read_progress(path: Path) -> dict | None:
    """The last progress written to ``path`` (None when there is none yet, or it is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
