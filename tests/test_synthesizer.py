"""Text + voice -> ordered int16 PCM, through the real engine thread on the fixture models."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from fixture_support import Voices
from safetensors.torch import load_file

from wyoming_lina.codec import load_codec
from wyoming_lina.engine import Engine, SamplingOptions, StreamingDecoder
from wyoming_lina.engine.synthesizer import SynthesisSettings, Synthesizer
from wyoming_lina.errors import TextTooLongError, UnknownVoiceError, UnsupportedTextError
from wyoming_lina.model import load_lina, load_speaker_state
from wyoming_lina.text import LinaTokenizer
from wyoming_lina.voices.voice import Voice


@pytest.fixture(scope="module")
def synth(lina_dir, codec_dir):
    model = load_lina(lina_dir / "model.ckpt")
    codec = load_codec(codec_dir / "config.yaml", codec_dir / "model.ckpt")
    vec = load_file(str(lina_dir / "vectors.safetensors"))
    voices = Voices(
        [
            Voice("plain"),
            Voice("clip", prompt_codes=vec["prompt_codes"][0], prompt_text="a short prompt"),
            Voice("tuned", initial_state=load_speaker_state(lina_dir / "speaker_state.safetensors", model)),
        ]
    )
    settings = SynthesisSettings(
        default_voice="plain", max_frames=60, sentence_silence=0.1,
        max_text_chars=500, sampling=SamplingOptions(top_k=1),
    )  # fmt: skip
    engine = Engine(model, StreamingDecoder(codec))
    engine.start()
    yield Synthesizer(engine, LinaTokenizer(lina_dir / "bpe256.json"), voices, settings)
    engine.stop()


async def collect(aiter):
    return [chunk async for chunk in aiter]


async def test_whole_text_is_spoken_sentence_by_sentence(synth):
    chunks = await asyncio.wait_for(collect(synth.synthesize("Hello there. It is 5 o'clock!", "clip")), 60)
    audio = np.concatenate(chunks)
    assert audio.dtype == np.int16 and len(audio) > 0
    silence = int(0.1 * 24000)
    frames_audio = len(audio) - silence  # two sentences, one pause between them
    assert frames_audio % 320 == 0
    assert any(len(c) == silence and not c.any() for c in chunks)


async def test_streamed_fragments_submit_each_sentence_when_complete(synth):
    stream = synth.open_stream("tuned")
    stream.add_text("Hel")
    stream.add_text("lo there. How ")
    assert stream.sentences == 1  # "Hello there." already generating
    stream.add_text("are you?")
    stream.finish()
    assert stream.sentences == 2
    chunks = await asyncio.wait_for(collect(stream), 60)
    assert sum(len(c) for c in chunks) > 0


async def test_default_voice_and_unknown_voice(synth):
    assert synth.resolve_voice(None).name == "plain"
    with pytest.raises(UnknownVoiceError, match="plain, clip, tuned"):
        synth.resolve_voice("nobody")


@pytest.mark.parametrize("text", ["", "   ", "...", "!?"])
async def test_nothing_to_say_gives_no_audio(synth, text):
    assert await asyncio.wait_for(collect(synth.synthesize(text)), 30) == []


@pytest.mark.parametrize(
    "text", ["\U0001f600", "\u4f60\u597d\u3002", "\u0645\u0631\u062d\u0628\u0627", "\U0001f600 \U0001f44d!"]
)
async def test_text_that_normalises_to_nothing_is_an_error_naming_what_was_dropped(synth, text):
    with pytest.raises(UnsupportedTextError, match="nothing in this text can be spoken") as err:
        await asyncio.wait_for(collect(synth.synthesize(text)), 30)
    assert err.value.code == "unsupported-text"
    assert repr(text.strip("!")[0]) in str(err.value)  # names a character it could not say


async def test_text_over_the_limit_is_refused(synth):
    with pytest.raises(TextTooLongError):
        await collect(synth.synthesize("word " * 200))


async def test_cancelling_a_stream_frees_its_rows(synth):
    stream = synth.open_stream("plain")
    stream.add_text("One sentence here. Another one there. And a third one.")
    stream.finish()
    agen = stream.__aiter__()
    await asyncio.wait_for(agen.__anext__(), 30)
    await agen.aclose()  # the client went away
    for _ in range(100):
        if synth.engine.load == (0, 0):
            break
        await asyncio.sleep(0.05)
    assert synth.engine.load == (0, 0)


async def test_cancel_without_finish_ends_the_stream(synth):
    stream = synth.open_stream(synth.resolve_voice("plain"))
    stream.add_text("A sentence that is complete. And one that is not")
    stream.cancel()
    chunks = await asyncio.wait_for(collect(stream), 10)
    assert isinstance(chunks, list)


@pytest.mark.parametrize("alone", [True, False])
async def test_first_audio_alone_holds_the_other_sentences_until_the_first_audio(synth, alone):
    """On a CPU (``first_audio_alone``) the first sentence generates by itself until its first
    audio, then the others join; without it every sentence starts at once."""
    settings = dataclasses.replace(synth.settings, first_audio_alone=alone)
    stream = Synthesizer(synth.engine, synth.tokenizer, synth.voices, settings).open_stream("clip")
    stream.add_text("Hello there. How are you today? It is 5 o'clock.")
    stream.finish()
    chunks = await asyncio.wait_for(collect(stream), 60)
    assert sum(len(c) for c in chunks) > 0
    first, *others = stream._all
    assert len(others) == 2
    heard = first.stats.first_audio
    if alone:
        assert all(h.stats.submitted >= heard for h in others), (heard, [h.stats.submitted for h in others])
    else:
        assert all(h.stats.submitted < heard for h in others)
