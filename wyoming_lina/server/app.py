"""Serving until SIGTERM/SIGINT, then stopping within a bounded time.

On a stop signal: withdraw the zeroconf record, give requests in progress up to
``shutdown_timeout`` seconds to finish, then close every connection (which cancels what is
left). The caller stops the engine afterwards and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from wyoming.server import AsyncServer, AsyncStdioServer, HandlerFactory

if TYPE_CHECKING:
    from .tracking import RequestTracker

_LOGGER = logging.getLogger(__name__)


class ListenError(RuntimeError):
    """The server cannot listen where it was told to (port in use, no permission...)."""


def check_listen(uri: str) -> None:
    """Bind a tcp:// address once and let it go, so a port in use or a host that is not this
    machine's is reported in the first second, not after minutes of loading the model."""
    parsed = urlparse(uri)
    if parsed.scheme != "tcp":
        return
    host = parsed.hostname or "0.0.0.0"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, parsed.port or 0), family=family):
            pass
    except OSError as err:
        raise ListenError(f"cannot listen at {uri}: {err.strerror or err}") from None


async def serve(
    server: AsyncServer,
    handler_factory: HandlerFactory,
    tracker: RequestTracker,
    *,
    shutdown_timeout: float = 5.0,
    on_started: Callable[[], Awaitable[None]] | None = None,
    on_stopping: Callable[[], Awaitable[None]] | None = None,
    alongside: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Listen, then wait for a stop signal (or the end of a stdio client). ``alongside()`` runs
    while serving (loading the model): if it fails, the server stops and its error is raised."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if isinstance(server, AsyncStdioServer):  # serves one client until stdin closes
        running = asyncio.create_task(server.run(handler_factory))
    else:
        try:
            await server.start(handler_factory)  # listening now; no signal handling of its own
        except OSError as err:
            raise ListenError(f"cannot listen: {err}") from err
        running = None
    if on_started is not None:
        await on_started()
    failed: list[BaseException] = []
    background = asyncio.create_task(alongside()) if alongside is not None else None
    if background is not None:

        def check(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                failed.append(task.exception())
                stop.set()

        background.add_done_callback(check)

    waiters = [asyncio.create_task(stop.wait())] + ([running] if running else [])
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        _LOGGER.info("stopping")
        if on_stopping is not None:
            await on_stopping()
        if tracker.active:
            _LOGGER.info("waiting up to %.1f s for %d request(s) in progress", shutdown_timeout, tracker.active)
            try:
                await asyncio.wait_for(tracker.wait_idle(), shutdown_timeout)
            except asyncio.TimeoutError:
                _LOGGER.warning("cancelling %d request(s) still in progress", tracker.active)
        await server.stop()  # closes every connection; their handlers cancel what is left
        await asyncio.sleep(0)  # let the handlers see it
    finally:
        for task in waiters + ([background] if background is not None else []):
            task.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if failed:
        raise failed[0]
