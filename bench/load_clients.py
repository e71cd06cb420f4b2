"""The load generator of bench/bench_server.py: Wyoming clients as Home Assistant behaves.

    python bench/load_clients.py --port 10200 --clients 8 --requests 4 [--voice NAME] [--start-at EPOCH]

Runs in its own process (never the server's): ``--clients`` asyncio clients, each sending
``--requests`` requests one after another, every request on a NEW connection (as Home Assistant
does), a two-sentence text (``--sentences 1``: its first sentence only), and reading up to
``audio-stop``. Prints one JSON object: per request
its start (epoch seconds, taken before ``synthesize`` is written), time to first ``audio-chunk``,
end, samples received and the error (if any). Imports no torch: the client must stay light.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time

from wyoming.event import async_read_event, async_write_event
from wyoming.tts import Synthesize, SynthesizeVoice

# What a home assistant says: two sentences, numbers and times included (text preparation runs).
TEXTS = (
    "The living room lights are now on. The temperature inside is 21 degrees.",
    "Your timer for 10 minutes has finished. The oven is still switched on.",
    "The front door is locked. All of the windows in the house are closed.",
    "It is 7:30 in the morning. Today will be sunny with a high of 24 degrees.",
    "The washing machine has finished its cycle. Please empty it soon.",
    "Good evening! The garage door has been open for 15 minutes.",
    "Playing your morning playlist in the kitchen. The volume is set to 40 percent.",
    "The vacuum cleaner is back on its dock. Its battery is at 85 percent.",
)
READ_TIMEOUT = 120.0


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of values, or None for none."""
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def request_text(index: int, sentences: int = 2) -> str:
    """The index-th text (cycling), whole or only its first sentence."""
    text = TEXTS[index % len(TEXTS)]
    return text if sentences > 1 else re.split(r"(?<=[.!?]) ", text, maxsplit=1)[0]


async def one_request(host: str, port: int, text: str, voice: str | None) -> dict:
    """One request on its own connection: {start, ttfa, end, samples, error}."""
    record = {"start": time.time(), "ttfa": None, "end": None, "samples": 0, "error": None, "connect": None}
    t0 = time.perf_counter()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        record["connect"] = time.perf_counter() - t0
        request = Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event()
        t_write = time.perf_counter()
        record["start"] = time.time()
        await async_write_event(request, writer)
        while True:
            event = await asyncio.wait_for(async_read_event(reader), READ_TIMEOUT)
            if event is None:
                record["error"] = "connection closed before audio-stop"
                break
            if event.type == "audio-chunk":
                if record["ttfa"] is None:
                    record["ttfa"] = time.perf_counter() - t_write
                record["samples"] += len(event.payload or b"") // 2
            elif event.type == "error":
                record["error"] = f"{event.data.get('code')}: {event.data.get('text')}"
            elif event.type == "audio-stop":
                break
    except (OSError, asyncio.TimeoutError) as err:
        record["error"] = f"{type(err).__name__}: {err}"
    finally:
        record["end"] = time.time()
        if writer is not None:
            writer.close()
    return record


async def run_clients(
    host: str,
    port: int,
    clients: int,
    requests: int,
    voice: str | None,
    start_at: float,
    offset: int,
    sentences: int = 2,
) -> list[dict]:
    delay = start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)

    async def client(i: int) -> list[dict]:
        out = []
        for r in range(requests):
            text = request_text(offset + i + r * 3, sentences)
            out.append({"client": offset + i, **await one_request(host, port, text, voice)})
        return out

    results = await asyncio.gather(*(client(i) for i in range(clients)))
    return [record for per_client in results for record in per_client]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--requests", type=int, default=4, help="requests per client, one after another")
    parser.add_argument("--voice", help="voice name (default: the server's default voice)")
    parser.add_argument(
        "--start-at", type=float, default=0.0, help="epoch seconds to start at (several processes together)"
    )
    parser.add_argument("--offset", type=int, default=0, help="number of the first client (texts differ per client)")
    parser.add_argument("--sentences", type=int, choices=(1, 2), default=2, help="1: each text's first sentence only")
    args = parser.parse_args()
    records = asyncio.run(
        run_clients(
            args.host, args.port, args.clients, args.requests, args.voice, args.start_at, args.offset, args.sentences
        )
    )
    json.dump({"records": records}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
