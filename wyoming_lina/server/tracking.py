"""What the server counts across connections: open connections (``--max-connections``) and
requests in progress (a shutdown lets them finish first)."""

from __future__ import annotations

import asyncio


class ConnectionCounter:
    """Open connections over the whole server, for ``--max-connections``."""

    def __init__(self) -> None:
        self.open = 0


class RequestTracker:
    """Requests in progress over all connections, so a shutdown can let them finish. A handler
    ends its count from its request task's done-callback, so the count cannot leak however the
    request ends (finished, failed, or cancelled before it ever ran)."""

    def __init__(self) -> None:
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.active += 1
        self._idle.clear()

    def end(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()
