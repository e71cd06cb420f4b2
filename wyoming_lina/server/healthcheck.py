"""``python -m wyoming_lina.server.healthcheck [URI]``: exit 0 when the server answers describe.

Used by the container's HEALTHCHECK; light (imports only ``wyoming``, not torch).
"""

from __future__ import annotations

import asyncio
import sys

from wyoming.client import AsyncClient
from wyoming.info import Describe, Info

DEFAULT_URI = "tcp://127.0.0.1:10200"


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
    ok = asyncio.run(check(argv[0] if argv else DEFAULT_URI))
    if not ok:
        print("wyoming-lina: no answer to describe", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
