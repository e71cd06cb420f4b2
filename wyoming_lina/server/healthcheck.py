"""``python -m wyoming_lina.server.healthcheck [URI]``: exit 0 when the server answers describe.

Used by the container's HEALTHCHECK; light (imports only ``wyoming``, not torch). Without a
URI it asks the address the server itself published: when ``WYOMING_LINA_URI_FILE`` is set
(the image sets it), ``serve`` writes the URI it listens on into that file once it is ready,
so the check follows a port changed on the command line or in the YAML config.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from wyoming.client import AsyncClient
from wyoming.info import Describe, Info

DEFAULT_URI = "tcp://127.0.0.1:10200"
URI_FILE_ENV = "WYOMING_LINA_URI_FILE"
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


def publish_uri(uri: str) -> None:
    """Tell the health check where the server listens (when ``$WYOMING_LINA_URI_FILE`` is set)."""
    target = os.environ.get(URI_FILE_ENV)
    if not target or not uri.startswith(("tcp://", "unix://")):
        return
    from ..atomic import atomic_write_bytes

    try:
        atomic_write_bytes(Path(target), (uri + "\n").encode())
    except OSError as err:
        logging.getLogger(__name__).warning("cannot write %s for the health check: %s", target, err)


def published_uri() -> str:
    """The URI the server published, reachable from this machine; the default without one."""
    target = os.environ.get(URI_FILE_ENV)
    try:
        uri = Path(target).read_text().strip() if target else ""
    except OSError:
        uri = ""
    return connectable(uri) if uri else DEFAULT_URI


def connectable(uri: str) -> str:
    """A listen URI as a client connects to it: the bind-all address becomes loopback."""
    for any_address, loopback in _ANY_ADDRESS.items():
        prefix = f"tcp://{any_address}:"
        if uri.startswith(prefix):
            return f"tcp://{loopback}:" + uri[len(prefix) :]
    return uri


async def check(uri: str = DEFAULT_URI, timeout: float = 5.0) -> bool:
    """True when ``uri`` answers describe with an info that has an installed TTS program."""

    async def ask() -> bool:
        async with AsyncClient.from_uri(uri) as client:
            await client.write_event(Describe().event())
            while (event := await client.read_event()) is not None:
                if Info.is_type(event.type):
                    return any(program.installed for program in Info.from_event(event).tts)
        return False

    try:
        return await asyncio.wait_for(ask(), timeout)
    except (OSError, asyncio.TimeoutError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    uri = argv[0] if argv else published_uri()
    ok = asyncio.run(check(uri))
    if not ok:
        print(f"wyoming-lina: no answer to describe at {uri}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
