"""One client cannot starve the others: owners admitted in turn, a request's sentences submitted a
window at a time, per-owner and global queue bounds, cancelled work leaving every queue at once."""

from __future__ import annotations

import asyncio
import time

import pytest
from fixture_support import Voices

from wyoming_lina.engine import Engine, EngineSettings, GenerationJob, SamplingOptions, StreamingDecoder
from wyoming_lina.engine.rows import Phase, Row
from wyoming_lina.engine.scheduler import Scheduler
from wyoming_lina.engine.synthesizer import SynthesisSettings, Synthesizer
from wyoming_lina.errors import OverloadedError
from wyoming_lina.model import load_speaker_state
from wyoming_lina.text import LinaTokenizer, split_sentences
from wyoming_lina.voices.voice import Voice

pytestmark = pytest.mark.usefixtures("one_thread")
FLOOD = ". ".join(["Hi"] * 2000) + "."  # 8,000 characters: 2,000 sentences


class _Handle:
    """The part of a JobHandle the scheduler reads (no event loop needed)."""

    def __init__(self, job):
        self.job = job
        self.cancelled = False
        self.finished = []

    def finish(self, error=None):
        self.finished.append(error)

    stats = type("Stats", (), {"frames": 0})()


def row(owner, n=0):
    return Row(_Handle(GenerationJob([1, 5 + n, 2], max_frames=5, owner=owner)))


def test_owners_are_admitted_in_turn_each_in_order():
    scheduler = Scheduler(EngineSettings(max_admit_per_step=100))
    long = [row("long", i) for i in range(6)]
    for r in long:
        scheduler.submit(r)
    short = [row("short", i) for i in range(2)]
    for r in short:
        scheduler.submit(r)
    other = row("other")
    scheduler.submit(other)
    admitted = scheduler.admit(active=0)
    # one per owner per turn, the newest owner first (it has had no turn yet), each in its own order
    assert admitted[:5] == [other, short[0], long[0], short[1], long[1]]
    assert admitted[5:] == long[2:]
    assert scheduler.waiting == 0


def test_a_short_request_waits_one_turn_not_behind_a_long_one():
    scheduler = Scheduler(EngineSettings(max_admit_per_step=1))
    for i in range(50):
        scheduler.submit(row("long", i))
    assert scheduler.admit(active=0)[0].job.owner == "long"
    late = row("late")
    scheduler.submit(late)
    assert scheduler.admit(active=1) == [late]  # the long request's next row waits one turn


def test_queue_bounds_per_owner_and_in_all():
    scheduler = Scheduler(EngineSettings(max_queue=10, max_waiting_per_owner=4))
    for i in range(4):
        scheduler.submit(row("a", i))
    with pytest.raises(OverloadedError, match="this request already has 4"):
        scheduler.submit(row("a", 9))
    for i in range(4):
        scheduler.submit(row("b", i))
    scheduler.submit(row("c"))
    scheduler.submit(row("d"))
    with pytest.raises(OverloadedError, match="10 sentences are already waiting"):
        scheduler.submit(row("e"))


def test_a_cancelled_row_leaves_the_queue_at_once():
    scheduler = Scheduler(EngineSettings())
    rows = [row("a", i) for i in range(3)]
    for r in rows:
        scheduler.submit(r)
    scheduler.cancel(rows[1])
    assert scheduler.waiting == 2 and rows[1].phase is Phase.DONE and rows[1].handle.finished == [None]
    assert scheduler.admit(active=0) == [rows[0], rows[2]]


# --- through the synthesizer and the engine thread -------------------------------------------
@pytest.fixture(scope="module")
def synth(model, codec, lina_dir):
    voices = Voices([Voice("tuned", initial_state=load_speaker_state(lina_dir / "speaker_state.safetensors", model))])
    engine = Engine(model, StreamingDecoder(codec), EngineSettings(max_queue=64))
    engine.start()
    settings = SynthesisSettings(
        default_voice="tuned",
        sentence_silence=0.0,
        max_frames=20,
        max_sentences_ahead=4,
        sampling=SamplingOptions(seed=1),
    )
    yield Synthesizer(engine, LinaTokenizer(lina_dir / "bpe256.json"), voices, settings)
    engine.stop()


async def test_a_flood_of_sentences_never_fills_the_queue_and_others_are_served(synth):
    flood = synth.open_stream(owner="flooder")
    flood.add_text(FLOOD)
    flood.finish()
    assert flood.sentences == 2000
    rows, waiting = synth.engine.load
    assert rows + waiting <= 4  # a window of the request, not 2,000 rows
    player = flood.__aiter__()
    await asyncio.wait_for(player.__anext__(), 30)  # the long request is playing
    started = time.monotonic()
    for _ in range(3):  # meanwhile another client asks, and is answered, again and again
        chunks = [c async for c in synth.synthesize("Still alive?", owner="neighbour")]
        assert sum(len(c) for c in chunks) > 0
    assert time.monotonic() - started < 30
    assert sum(synth.engine.load) <= 4
    await player.aclose()  # the client goes away: all of its work leaves at once
    for _ in range(100):
        if synth.engine.load == (0, 0):
            break
        await asyncio.sleep(0.05)
    assert synth.engine.load == (0, 0)


async def test_a_request_plays_every_sentence_in_order_through_its_window(synth):
    text = "One. Two. Three. Four. Five. Six. Seven."
    chunks = [c async for c in synth.synthesize(text)]
    voice = synth.resolve_voice(None)
    jobs = [job for sentence in split_sentences(text) for job in synth.jobs_for(sentence, voice, SamplingOptions())]
    assert len(jobs) == 7  # more than the window of 4
    assert sum(len(c) for c in chunks) >= sum(j.min_frames for j in jobs) * 320


def test_engine_load_counts_waiting_rows(model, codec):
    engine = Engine(model, StreamingDecoder(codec), EngineSettings(max_queue=8, max_waiting_per_owner=2))

    async def main():
        handles = [engine.submit(GenerationJob([1, 5, 6, 2], max_frames=5, owner="x")) for _ in range(2)]
        with pytest.raises(OverloadedError):
            engine.submit(GenerationJob([1, 5, 6, 2], max_frames=5, owner="x"))
        assert engine.load == (0, 2)
        handles[0].cancel()
        assert engine.load == (0, 1)  # gone from the queue before the engine ran at all

    asyncio.run(main())
