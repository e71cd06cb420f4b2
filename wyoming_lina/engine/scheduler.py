"""Who generates next: the waiting queues, fair admission, cancellation, deadlines, memory back-off.

Waiting rows are queued per owner (a job's ``owner``: one client's request). Admission takes one
row per owner in turn, so a long request is served in order without starving a short one from
another client; each owner may have at most ``max_waiting_per_owner`` rows waiting (jobs without
an owner, from tools and tests, share one queue without that cap), and all owners together
``max_queue``. A cancelled row leaves its queue at once.

The scheduler decides; it never touches the model. ``submit`` and ``cancel`` are thread-safe
(callers on the event loop); everything else runs on the engine thread between steps.
"""

from __future__ import annotations

import collections
import math
import threading
import time

from ..errors import DeadlineExceededError, OverloadedError, ShuttingDownError
from .rows import Row
from .settings import EngineSettings


class Scheduler:
    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.max_batch = settings.max_batch  # lowered for a while after the GPU ran out of memory
        self._queues: collections.OrderedDict[object, collections.deque[Row]] = (
            collections.OrderedDict()
        )  # next turn first
        self._waiting = 0
        self._wakeup = threading.Condition()
        self._stopping = False
        self._cancel_seen = False  # a handle was cancelled since the last scan of the batch
        self._next_deadline = math.inf  # earliest deadline of a row in the batch
        self._good_iterations = 0

    # --- any thread -----------------------------------------------------------------------
    def submit(self, row: Row) -> None:
        """Queue a row; OverloadedError when the queue (or its owner's share) is full,
        ShuttingDownError when stopping."""
        owner = row.job.owner
        with self._wakeup:
            if self._stopping:
                raise ShuttingDownError("the server is shutting down")
            if self._waiting >= self.settings.max_queue:
                raise OverloadedError(f"{self._waiting} sentences are already waiting; try again shortly")
            queue = self._queues.get(owner)
            if owner is not None and queue is not None and len(queue) >= self.settings.max_waiting_per_owner:
                raise OverloadedError(f"this request already has {len(queue)} sentences waiting; try again shortly")
            if queue is None:  # a newcomer's turn comes next: it has had none yet
                queue = self._queues[owner] = collections.deque()
                self._queues.move_to_end(owner, last=False)
            queue.append(row)
            self._waiting += 1
            self._wakeup.notify()

    def cancel(self, row: Row) -> None:
        """A caller cancelled ``row`` (any thread): a waiting row leaves its queue at once (and its
        caller hears so); a row in the batch leaves at the next ``leaving`` scan."""
        with self._wakeup:
            queue = self._queues.get(row.job.owner)
            if queue is not None and row in queue:
                queue.remove(row)
                self._waiting -= 1
                if not queue:
                    del self._queues[row.job.owner]
                row.finish()
                return
        self._cancel_seen = True

    @property
    def waiting(self) -> int:
        return self._waiting

    def wait_for_work(self, busy, timeout: float = 0.5) -> bool:
        """Block the engine thread until ``busy()`` or a submit; False once stopping."""
        with self._wakeup:
            while not (self._waiting or self._stopping or busy()):
                self._wakeup.wait(timeout)
            return not self._stopping

    def wake(self) -> None:
        with self._wakeup:
            self._wakeup.notify()

    def stop(self) -> list[Row]:
        """Refuse new rows from now on; returns the rows still waiting (to be failed)."""
        with self._wakeup:
            self._stopping = True
            waiting = [row for queue in self._queues.values() for row in queue]
            self._queues.clear()
            self._waiting = 0
            self._wakeup.notify()
        return waiting

    def restart(self) -> None:
        with self._wakeup:
            self._stopping = False

    # --- engine thread ----------------------------------------------------------------------
    def admit(self, active: int) -> list[Row]:
        """The waiting rows that join a batch of ``active`` rows now: one per owner in turn, each
        owner's oldest first (an owner served goes to the back of the line)."""
        room = min(self.max_batch - active, self.settings.max_admit_per_step)
        admitted = []
        with self._wakeup:
            while self._queues and len(admitted) < room:
                owner, queue = next(iter(self._queues.items()))
                row = queue.popleft()
                self._waiting -= 1
                if queue:
                    self._queues.move_to_end(owner)
                else:
                    del self._queues[owner]
                if row.handle.cancelled:  # (cancel() normally took it out already)
                    row.finish()
                else:
                    admitted.append(row)
        return admitted

    def joined(self, rows: list[Row]) -> None:
        """Rows joined the batch: their deadlines count from now on."""
        for row in rows:
            if row.job.deadline is not None:
                self._next_deadline = min(self._next_deadline, row.job.deadline)

    def leaving(self, rows: list[Row]) -> tuple[list[int], list[tuple[Row, Exception | None]]] | None:
        """(indices of the rows that stay, [(row, error or None)] of those that leave: cancelled or
        overdue). None when nothing can have changed: the scan runs only after a cancel() or once
        the earliest deadline has passed (at hundreds of rows a scan every step costs real time)."""
        now = time.monotonic()
        if not (self._cancel_seen or now > self._next_deadline):
            return None
        self._cancel_seen = False
        keep, leaving = [], []
        for i, row in enumerate(rows):
            if row.handle.cancelled:
                leaving.append((row, None))
            elif row.job.deadline is not None and now > row.job.deadline:
                leaving.append((row, DeadlineExceededError("the request took longer than its deadline")))
            else:
                keep.append(i)
        self._next_deadline = min((rows[i].job.deadline for i in keep if rows[i].job.deadline), default=math.inf)
        return keep, leaving

    # --- memory back-off ----------------------------------------------------------------------
    def iteration_succeeded(self) -> None:
        """After enough good iterations the batch cap doubles back towards its setting."""
        self._good_iterations += 1
        if self._good_iterations >= self.settings.oom_recovery_iterations and self.max_batch < self.settings.max_batch:
            self.max_batch = min(self.settings.max_batch, 2 * self.max_batch)  # memory came back
            self._good_iterations = 0

    def iteration_failed(self) -> None:
        self._good_iterations = 0

    def out_of_memory(self, rows: int) -> int:
        """The GPU ran out of memory with ``rows`` generating: how many (the oldest) keep going.
        Admission is capped at that many for a while."""
        survivors = rows // 2
        self.max_batch = max(1, survivors)
        return survivors
