"""The voice store, the voice CLI and the default voice, with the tiny fixture model and codec."""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from wyoming_lina.errors import AudioFileError, UnknownVoiceError, VoiceError
from wyoming_lina.model import load_speaker_state
from wyoming_lina.voices import DefaultVoiceRecipe, VoiceStore, cli, ensure_default_voice, name_problem, validate_name
from wyoming_lina.voices.clips import trim_silence
from wyoming_lina.voices.files import CODES_FORMAT, codec_fingerprint, load_tensors

RATE = 24000


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture
def store(tmp_path, codec, model, tokenizer):
    return VoiceStore(tmp_path / "data", codec=codec, model=model, tokenizer=tokenizer)


def speech_like(seconds: float, rate: int = RATE, seed: int = 0, lead: float = 0.0, tail: float = 0.0) -> np.ndarray:
    """A voiced-sounding test signal: a gliding harmonic tone with syllable-rate amplitude, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t) + 10 * seed
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    x = 0.2 * voiced * envelope + 0.01 * rng.standard_normal(len(t))
    return np.concatenate([np.zeros(int(lead * rate)), x, np.zeros(int(tail * rate))]).astype(np.float32)


def write(path, samples, rate=RATE, subtype=None):
    soundfile.write(str(path), samples, rate, subtype=subtype)
    return path


# --- names ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["alice", "Alice", "en_US-amy.v2", "a", "x" * 64, "0day", "_x"])
def test_valid_names(name):
    assert name_problem(name) is None
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name, words",
    [
        ("", "empty"),
        ("../x", "path separators"),
        ("a/b", "path separators"),
        ("a\\b", "path separators"),
        ("..", "path separators"),
        (".hidden", "must not start with '.'"),
        ("x" * 65, "limit is 64"),
        ("with space", "may only use"),
        ("ünï", "may only use"),
        ("con", "reserved"),
        ("NUL.txt", "reserved"),
    ],
)
def test_bad_names_are_refused_with_the_reason(name, words, store, tmp_path):
    assert words in name_problem(name)
    with pytest.raises(VoiceError, match=re.escape(words)):
        store.add(name, audio=write(tmp_path / "c.wav", speech_like(4)), text="hello there my friend")
    assert not (tmp_path / "x").exists() and not (tmp_path / "data").exists()  # nothing written anywhere


def test_name_clash_in_another_case_is_refused(store, tmp_path):
    clip = write(tmp_path / "c.wav", speech_like(4))
    store.add("Alice", audio=clip, text="hello there my friend")
    with pytest.raises(VoiceError, match=r"already exists \(names ignore case: 'Alice'\)"):
        store.add("alice", audio=clip, text="hello there my friend")
    store.add("ALICE", audio=clip, text="good morning to you", overwrite=True)
    assert [v.name for v in store.list()] == ["ALICE"]
    assert store.get("alice").prompt_text == "good morning to you"


# --- round trips ---------------------------------------------------------------------------
def test_add_list_show_get_remove_round_trip(store, tmp_path):
    clip = write(tmp_path / "clip.wav", speech_like(4.0, lead=0.5, tail=0.5))
    result = store.add(
        "alice", audio=clip, text="Hello there,\n this is   a test.", languages=["en"], description="Alice"
    )
    assert result.warnings == ()
    assert result.info.name == "alice" and result.info.kind == "prompt" and result.info.installed
    folder = tmp_path / "data" / "voices" / "alice"
    assert sorted(p.name for p in folder.iterdir()) == [
        "prompt.codes.safetensors",
        "prompt.txt",
        "prompt.wav",
        "voice.yaml",
    ]
    info = store.list()
    assert [(i.name, i.kind, i.languages, i.installed, i.description) for i in info] == [
        ("alice", "prompt", ("en",), True, "Alice")
    ]
    voice = store.get("ALICE")  # case-insensitive
    assert voice.name == "alice" and voice.prompt_text == "Hello there, this is a test."
    assert voice.initial_state is None and voice.info.kind == "prompt"
    seconds = soundfile.info(str(folder / "prompt.wav")).duration
    assert 3.9 < seconds < 4.4  # 0.5 s silence trimmed at each end, 0.1 s kept
    assert voice.prompt_codes.dtype == torch.long
    assert abs(voice.prompt_codes.numel() - seconds * 75) <= 1
    details = store.show("alice")
    assert details["prompt"]["codes_cached"] and details["prompt"]["frames"] == voice.prompt_codes.numel()
    assert details["installed"] and details["description"] == "Alice"
    removed = store.remove("Alice")
    assert removed.name == "alice" and store.list() == [] and not folder.exists()
    with pytest.raises(UnknownVoiceError, match="unknown voice 'alice'; available voices: none"):
        store.get("alice")


def test_unknown_voice_names_the_available_ones(store, tmp_path):
    clip = write(tmp_path / "c.wav", speech_like(4))
    store.add("alice", audio=clip, text="hello there my friend")
    store.add("bob", audio=clip, text="hello there my friend")
    with pytest.raises(
        UnknownVoiceError, match=r"unknown voice 'alise' \(did you mean 'alice'\?\); available voices: alice, bob"
    ):
        store.get("alise")
    with pytest.raises(UnknownVoiceError, match="no voice was chosen.*available voices: alice, bob"):
        store.get("")


@pytest.mark.parametrize(
    "suffix, rate, channels, subtype",
    [
        ("wav", 44100, 2, "PCM_16"),
        ("flac", 16000, 1, "PCM_24"),
        ("wav", 48000, 1, "FLOAT"),
        ("ogg", 22050, 2, "VORBIS"),
    ],
)
def test_any_rate_channels_and_format_is_accepted(suffix, rate, channels, subtype, store, tmp_path):
    mono = speech_like(4.0, rate)
    samples = np.stack([mono, 0.5 * mono], 1) if channels == 2 else mono
    clip = write(tmp_path / f"clip.{suffix}", samples, rate, subtype)
    store.add("v", audio=clip, text="hello there, how are you today?")
    stored, stored_rate = soundfile.read(str(tmp_path / "data/voices/v/prompt.wav"), always_2d=True)
    assert stored_rate == RATE and stored.shape[1] == 1
    voice = store.get("v")
    assert abs(voice.prompt_codes.numel() - 4.0 * 75) <= 12


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p.write_bytes(b"this is not audio at all" * 50), "cannot read audio file"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: write(p, np.zeros(RATE * 4, np.float32)), "silent"),
        (lambda p: write(p, 1e-5 * np.random.default_rng(0).standard_normal(RATE * 4)), "silent"),
        (lambda p: write(p, speech_like(0.5)), "only 0.5 s of sound"),
        (lambda p: write(p, speech_like(31, rate=8000), 8000), "may be at most 30 s"),
        (lambda p: write(p, np.zeros(8000 * 130, np.float32), 8000), "130 s long"),
    ],
)
def test_bad_files_are_refused_with_a_clear_message(make, words, store, tmp_path):
    clip = tmp_path / "clip.wav"
    make(clip)
    with pytest.raises(AudioFileError, match=words):
        store.add("v", audio=clip, text="hello there my friend")
    assert store.list() == [] and not (tmp_path / "data/voices/v").exists()
    assert not [p for p in (tmp_path / "data/voices").iterdir()]  # no temporary folder left behind


def test_missing_file_and_missing_transcript(store, tmp_path):
    with pytest.raises(AudioFileError, match="not found"):
        store.add("v", audio=tmp_path / "nope.wav", text="hello")
    clip = write(tmp_path / "c.wav", speech_like(4))
    with pytest.raises(VoiceError, match="needs its transcript"):
        store.add("v", audio=clip, text="  ")
    with pytest.raises(VoiceError, match="the transcript has nothing the model can say"):
        store.add("v", audio=clip, text="😀 🎉")


def test_warnings_for_short_clipped_and_mismatched_clips(store, tmp_path):
    short = write(tmp_path / "short.wav", speech_like(2.0))
    warnings = store.add("short", audio=short, text="hello there friend").warnings
    assert any("only 2.0 s long" in w for w in warnings)
    loud = write(tmp_path / "loud.wav", np.clip(speech_like(5.0) * 8, -1, 1), subtype="PCM_16")
    warnings = store.add("loud", audio=loud, text="hello there, how are you doing today?").warnings
    assert any("clipped" in w for w in warnings)
    wrong = write(tmp_path / "long.wav", speech_like(10.0))
    warnings = store.add("wrong", audio=wrong, text="hi").warnings
    assert any("must be exactly everything said" in w for w in warnings)
    long = write(tmp_path / "long.wav", speech_like(16.0))
    warnings = store.add("long", audio=long, text="hello there, how are you doing today? " * 5).warnings
    assert any("16.0 s long" in w for w in warnings)


def test_trim_silence_keeps_a_little_around_the_sound():
    x = np.concatenate([np.zeros(RATE), speech_like(1.0), np.zeros(RATE)])
    start, end = trim_silence(x, RATE)
    assert abs(start - 0.9 * RATE) <= RATE // 100 and abs(end - 2.1 * RATE) <= RATE // 100


# --- rescans, broken voices, caches ------------------------------------------------------
def test_voice_added_on_disk_appears_in_the_next_list(store, tmp_path, codec):
    assert store.list() == []
    other = VoiceStore(tmp_path / "data")  # e.g. the CLI, while the server runs
    other.add("late", audio=write(tmp_path / "c.wav", speech_like(4)), text="hello there my friend")
    assert [i.name for i in store.list()] == ["late"]
    assert store.get("late").prompt_codes is not None  # encoded now (the CLI had no codec)
    # a folder copied in by hand
    os.rename(tmp_path / "data/voices/late", tmp_path / "data/voices/copied")
    assert [i.name for i in store.list()] == ["copied"]
    with pytest.raises(UnknownVoiceError):
        store.get("late")


def test_broken_voice_is_listed_as_not_installed_and_logged_once(store, tmp_path, caplog):
    store.add("good", audio=write(tmp_path / "c.wav", speech_like(4)), text="hello there my friend")
    broken = tmp_path / "data/voices/broken"
    broken.mkdir()
    (broken / "voice.yaml").write_text("kind: [\n")
    caplog.set_level(logging.WARNING, logger="wyoming_lina.voices.store")
    for _ in range(3):
        infos = {i.name: i for i in store.list()}
        assert infos["good"].installed
        assert not infos["broken"].installed and "not valid YAML" in infos["broken"].problem
    with pytest.raises(VoiceError, match="voice 'broken' is broken: .*not valid YAML"):
        store.get("broken")
    assert len([r for r in caplog.records if "broken" in r.getMessage()]) == 1
    (broken / "voice.yaml").write_text("kind: prompt\n")  # now the clip is missing: a new problem
    assert "clip" in {i.name: i for i in store.list()}["broken"].problem
    assert len([r for r in caplog.records if "broken" in r.getMessage()]) == 2
    (broken / "voice.yaml").write_text("kind: weird\n")
    store.list()
    (broken / "voice.yaml").unlink()
    (broken / "voice.yaml").write_text("kind: state\n")
    (broken / "state.safetensors").write_bytes(b"garbage")
    infos = {i.name: i for i in store.list()}
    assert not infos["broken"].installed and "cannot read" in infos["broken"].problem
    with pytest.raises(VoiceError):
        store.get("broken")
    assert [i.name for i in store.list() if i.installed] == ["good"]


def test_a_clip_that_breaks_after_listing_is_marked_on_get(store, tmp_path, caplog):
    store.add("v", audio=write(tmp_path / "c.wav", speech_like(4)), text="hello there my friend")
    clip = tmp_path / "data/voices/v/prompt.wav"
    write(clip, np.zeros(RATE * 4, np.float32))  # readable, but silence now
    assert store.list()[0].installed  # listing only checks headers
    caplog.set_level(logging.WARNING, logger="wyoming_lina.voices.store")
    with pytest.raises(VoiceError, match="silent"):
        store.get("v")
    info = store.list()[0]
    assert not info.installed and "silent" in info.problem
    with pytest.raises(VoiceError, match="silent"):
        store.get("v")  # not loaded again: the failure is remembered until the files change
    store.list()
    assert len([r for r in caplog.records if "silent" in r.getMessage()]) == 1
    write(clip, speech_like(4, seed=2))
    assert store.list()[0].installed and store.get("v").prompt_codes is not None


def test_loaded_voices_are_cached_by_file_times(store, tmp_path):
    store.add("v", audio=write(tmp_path / "c.wav", speech_like(4)), text="hello there my friend")
    first = store.get("v")
    assert store.get("V") is first
    (tmp_path / "data/voices/v/prompt.txt").write_text("good morning, my friend\n")
    second = store.get("v")
    assert second is not first and second.prompt_text == "good morning, my friend"
    assert torch.equal(second.prompt_codes, first.prompt_codes)  # same clip: codes from the cache
    assert store.get("v") is second


def test_loaded_gives_only_what_get_would_give(store, tmp_path, lina_dir):
    """``loaded`` (asked on the server's event loop) never answers with a voice that changed,
    was removed or is hidden by a newer one: it says None and ``get`` decides."""
    store.add("v", audio=write(tmp_path / "c.wav", speech_like(4)), text="hello there my friend")
    assert store.loaded("v") is None  # never loaded: get() must load it (in a worker thread)
    first = store.get("v")
    assert store.loaded("v") is first and store.loaded("V") is first
    (tmp_path / "data/voices/v/prompt.txt").write_text("good morning, my friend\n")
    assert store.loaded("v") is None
    second = store.get("v")
    assert second is not first and store.loaded("v") is second
    other = tmp_path / "data/voices/w"  # a voice made on disk by hand: the voices folder changed
    other.mkdir()
    (other / "voice.yaml").write_text("kind: state\n")
    (other / "state.safetensors").write_bytes((lina_dir / "speaker_state.safetensors").read_bytes())
    assert store.loaded("v") is None and store.loaded("w") is None
    store.list()  # (a describe) rescans: nothing about v changed
    assert store.loaded("v") is second
    store.remove("v")
    assert store.loaded("v") is None
    with pytest.raises(UnknownVoiceError):
        store.get("v")
    assert store.loaded("nobody") is None and store.loaded("") is None and store.loaded(None) is None


def test_loaded_voice_of_a_voices_file(tmp_path, codec, model):
    clip = write(tmp_path / "a.wav", speech_like(3))
    listing = tmp_path / "voices.yaml"
    listing.write_text(f"alice:\n  audio: {clip}\n  text: hello there my friend\n")
    store = VoiceStore(tmp_path / "data", codec=codec, model=model, config_path=listing)
    alice = store.get("alice")
    store.list()  # (the first load made the code cache's folder in the voices folder)
    assert store.loaded("alice") is alice
    listing.write_text(f"alice:\n  audio: {clip}\n  text: hello there, my good friend\n")
    assert store.loaded("alice") is None
    assert store.get("alice").prompt_text == "hello there, my good friend"
    write(clip, speech_like(3, seed=1))  # the clip itself changed
    assert store.loaded("alice") is None


class CountingCodec:
    """The fixture codec, counting encodes."""

    def __init__(self, codec):
        self.codec, self.encodes = codec, 0

    def encode_clip(self, samples, rate):
        self.encodes += 1
        return self.codec.encode_clip(samples, rate)

    def __getattr__(self, name):
        return getattr(self.codec, name)


def test_prompt_code_cache_is_reused_and_invalidated(tmp_path, codec, model):
    counting = CountingCodec(codec)
    VoiceStore(tmp_path, codec=counting).add(
        "v", audio=write(tmp_path / "c.wav", speech_like(4)), text="hello there my friend"
    )
    assert counting.encodes == 1
    cache = tmp_path / "voices/v/prompt.codes.safetensors"
    codes, meta = load_tensors(cache)
    assert meta["format"] == CODES_FORMAT and meta["origin"] == "encoded" and meta["codec"] == codec_fingerprint(codec)
    fresh = VoiceStore(tmp_path, codec=counting, model=model)  # a restart
    first = fresh.get("v").prompt_codes
    assert counting.encodes == 1 and torch.equal(first, codes["codes"])
    write(tmp_path / "voices/v/prompt.wav", speech_like(4, seed=3))  # the clip changes
    second = fresh.get("v").prompt_codes
    assert counting.encodes == 2 and not torch.equal(first, second)
    fresh.get("v")
    VoiceStore(tmp_path, codec=counting).get("v")
    assert counting.encodes == 2
    other = copy.deepcopy(codec)  # another codec: another codebook
    other.quantizer.embed.add_(1e-3)
    other_counting = CountingCodec(other)
    assert codec_fingerprint(other) != codec_fingerprint(codec)
    VoiceStore(tmp_path, codec=other_counting).get("v")
    assert other_counting.encodes == 1
    assert load_tensors(cache)[1]["codec"] == codec_fingerprint(other)
    # without a codec the cached codes are used as they are; without cache the error says why
    assert torch.equal(VoiceStore(tmp_path).get("v").prompt_codes, load_tensors(cache)[0]["codes"])
    cache.unlink()
    with pytest.raises(VoiceError, match="not been encoded yet and no codec is loaded"):
        VoiceStore(tmp_path).get("v")


# --- state voices, voices file ------------------------------------------------------------
def test_upstream_speaker_state_is_a_voice(store, lina_dir, model, tmp_path):
    path = lina_dir / "speaker_state.safetensors"
    info = store.add("tuned", state=path, description="from upstream").info
    assert info.kind == "state" and info.installed
    voice = store.get("tuned")
    assert voice.prompt_codes is None and voice.info.kind == "state"
    reference = load_speaker_state(path, model)
    assert len(voice.initial_state.S) == len(reference.S) == 4
    for mine, theirs in zip(voice.initial_state.S, reference.S, strict=True):
        assert torch.equal(mine, theirs)
    stored, _ = load_tensors(tmp_path / "data/voices/tuned/state.safetensors")
    upstream, _ = load_tensors(path)
    assert stored.keys() == upstream.keys() and all(torch.equal(stored[k], upstream[k]) for k in stored)
    details = store.show("tuned")
    assert details["state"]["layers"] == 4 and details["state"]["rank"] == 1
    # a voice with both a clip and a state
    both = store.add("both", audio=write(tmp_path / "c.wav", speech_like(4)), text="hello there my friend", state=path)
    assert both.info.kind == "prompt+state"
    voice = store.get("both")
    assert voice.prompt_codes is not None and voice.initial_state is not None and voice.info.kind == "prompt+state"


def test_state_for_another_model_is_refused(store, lina_dir, tmp_path):
    tensors, _ = load_tensors(lina_dir / "speaker_state.safetensors")
    from safetensors.torch import save_file

    wrong = dict(tensors)
    wrong["layer0_k"] = torch.randn(1, 1, 2, 8, 1)
    save_file({k: v.contiguous() for k, v in wrong.items()}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(VoiceError, match="layer0 shapes"):
        store.add("w", state=tmp_path / "wrong.safetensors")
    fewer = {k: v for k, v in tensors.items() if not k.startswith("layer3")}
    save_file(fewer, str(tmp_path / "fewer.safetensors"))
    with pytest.raises(VoiceError, match="has 3 layers; this model has 4"):
        store.add("w", state=tmp_path / "fewer.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(VoiceError, match="cannot read"):
        store.add("w", state=tmp_path / "junk.safetensors")
    assert store.list() == []


def test_voices_listed_in_a_yaml_file(tmp_path, codec, model, lina_dir):
    clips = tmp_path / "elsewhere"
    clips.mkdir()
    write(clips / "carol.flac", np.concatenate([np.zeros(RATE), speech_like(4.0)]))
    config = clips / "voices.yaml"
    config.write_text(
        "carol:\n  audio: carol.flac\n  text: Hello there, my friend.\n  languages: [en, fr]\n  description: Carol\n"
        f"dave:\n  state: {lina_dir / 'speaker_state.safetensors'}\n"
        "eve:\n  audio: missing.wav\n  text: hi\n"
        "Carol:\n  audio: carol.flac\n  text: again\n"
        "frank:\n  audio: carol.flac\n  text_file: frank.txt\n"
        "grace: just a string\n"
    )
    store = VoiceStore(tmp_path / "data", codec=codec, model=model, config_path=config)
    infos = {i.name: i for i in store.list()}
    assert sorted(infos) == ["carol", "dave", "eve", "frank", "grace"]
    assert not infos["frank"].installed and "cannot read" in infos["frank"].problem
    assert not infos["grace"].installed and "must be a mapping" in infos["grace"].problem
    (clips / "frank.txt").write_text("Hello there, my friend.\n")  # the YAML itself is unchanged
    assert {i.name: i for i in store.list()}["frank"].installed
    assert store.get("frank").prompt_text == "Hello there, my friend."
    assert (
        infos["carol"].installed and infos["carol"].languages == ("en", "fr") and infos["carol"].description == "Carol"
    )
    assert infos["dave"].installed and infos["dave"].kind == "state"
    assert not infos["eve"].installed and "missing" in infos["eve"].problem
    carol = store.get("CAROL")
    assert abs(carol.prompt_codes.numel() - 4.2 * 75) < 10  # the leading second of silence is trimmed
    assert (tmp_path / "data/voices/.cache/carol.prompt.codes.safetensors").is_file()
    assert store.get("dave").initial_state is not None
    with pytest.raises(VoiceError, match="defined in"):
        store.remove("carol")
    with pytest.raises(VoiceError, match="already defined in"):
        store.add("carol", state=lina_dir / "speaker_state.safetensors")


# --- the CLI -------------------------------------------------------------------------------
def parse(*argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli.add_voice_parser(sub)
    return parser.parse_args(list(argv))


def test_cli_add_list_show_remove(tmp_path, codec_dir, lina_dir, capsys, monkeypatch):
    data = str(tmp_path / "data")
    clip = write(tmp_path / "clip.wav", speech_like(4.0, rate=16000), 16000)
    codec_opts = ["--codec-config", str(codec_dir / "config.yaml"), "--codec-checkpoint", str(codec_dir / "model.ckpt")]
    args = parse(
        "voice",
        "--data-dir",
        data,
        "add",
        "Alice",
        "--audio",
        str(clip),
        "--text",
        "Hello there, my friend.",
        *codec_opts,
        "--language",
        "en",
        "--description",
        "Alice at home",
    )
    assert args.command == "voice" and cli.run(args) == 0
    assert "added voice 'Alice' (prompt, en)" in capsys.readouterr().out
    assert (tmp_path / "data/voices/Alice/prompt.codes.safetensors").is_file()
    state = str(lina_dir / "speaker_state.safetensors")
    assert (
        cli.run(
            parse(
                "voice",
                "add",
                "bob",
                "--state",
                state,
                "--data-dir",
                data,
                "--lina-checkpoint",
                str(lina_dir / "model.ckpt"),
            )
        )
        == 0
    )
    capsys.readouterr()
    assert cli.run(parse("voice", "add", "alice", "--audio", str(clip), "--text", "hi", "--data-dir", data)) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.run(parse("voice", "list", "--json", "--data-dir", data)) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["name"], v["kind"], v["installed"]) for v in listed] == [
        ("Alice", "prompt", True),
        ("bob", "state", True),
    ]
    assert cli.run(parse("voice", "list", "--data-dir", data)) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "KIND", "LANGUAGES", "DESCRIPTION", "STATUS"] and "Alice at home" in table[1]
    assert cli.run(parse("voice", "show", "alice", "--json", "--data-dir", data)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "Alice" and shown["prompt"]["transcript"] == "Hello there, my friend."
    assert cli.run(parse("voice", "remove", "ALICE", "--data-dir", data)) == 0
    assert "removed voice 'Alice'" in capsys.readouterr().out
    assert cli.run(parse("voice", "show", "alice", "--data-dir", data)) == 1
    assert "unknown voice 'alice'; available voices: bob" in capsys.readouterr().err
    # without --data-dir: the default data dir, as for the server (the image sets the variable)
    monkeypatch.setenv("WYOMING_LINA_DATA_DIR", data)
    assert cli.run(parse("voice", "list")) == 0
    assert "bob" in capsys.readouterr().out


def test_cli_options_do_not_override_the_main_parser(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="/from/main")
    parser.add_argument("--device", default="cpu")
    cli.add_voice_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["voice", "list"])
    assert args.data_dir == "/from/main" and args.device == "cpu"
    args = parser.parse_args(["voice", "list", "--data-dir", "/given"])
    assert args.data_dir == Path("/given")


def test_cli_runs_standalone(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "wyoming_lina.voices.cli", "list", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "no voices in" in out.stdout


# --- the default voice ---------------------------------------------------------------------
RECIPE = DefaultVoiceRecipe(max_seconds=2.0, attempts=2)


def test_default_voice_is_made_once_and_stays_the_same(tmp_path, codec, model, tokenizer):
    store = VoiceStore(tmp_path / "a", codec=codec, model=model, tokenizer=tokenizer)
    voice = ensure_default_voice(store, recipe=RECIPE)
    folder = tmp_path / "a/voices/default"
    assert voice.name == "default" and voice.prompt_text == RECIPE.text and voice.initial_state is None
    n = voice.prompt_codes.numel()
    assert 0.4 * 5 * len(RECIPE.text) - 5 <= n <= 2.0 * 75  # floor: 40% of 5 frames per character
    assert voice.prompt_codes.min() >= 0 and voice.prompt_codes.max() < 64
    assert voice.frames_per_char == 5.0  # the built-in voice speaks at the documented default rate
    samples, rate = soundfile.read(str(folder / "prompt.wav"))
    assert rate == RATE and len(samples) == 320 * n  # the decoded codes, for listening
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = ensure_default_voice(store, recipe=RECIPE)
    assert torch.equal(again.prompt_codes, voice.prompt_codes)
    restarted = ensure_default_voice(
        VoiceStore(tmp_path / "a", codec=codec, model=model, tokenizer=tokenizer), recipe=RECIPE
    )
    assert torch.equal(restarted.prompt_codes, voice.prompt_codes) and restarted.prompt_text == voice.prompt_text
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps  # never made again
    # the codes are the voice: even a store without codec or model reads them
    assert torch.equal(VoiceStore(tmp_path / "a").get("default").prompt_codes, voice.prompt_codes)
    # the recipe is deterministic: another data dir gets the same speaker
    other = ensure_default_voice(
        VoiceStore(tmp_path / "b", codec=codec), model=model, tokenizer=tokenizer, recipe=RECIPE
    )
    assert torch.equal(other.prompt_codes, voice.prompt_codes)
    assert [i.name for i in store.list()] == ["default"]


def test_broken_default_voice_fails_loudly(tmp_path, codec, model, tokenizer):
    store = VoiceStore(tmp_path, codec=codec, model=model, tokenizer=tokenizer)
    (tmp_path / "voices/default").mkdir(parents=True)
    (tmp_path / "voices/default/voice.yaml").write_text("kind: prompt\n")
    with pytest.raises(VoiceError, match="voice 'default' is broken"):
        ensure_default_voice(store, recipe=RECIPE)


@pytest.mark.parametrize("value", ["fast", 0.5, 40, True])
def test_a_bad_speaking_rate_in_voice_yaml_makes_the_voice_unusable(tmp_path, lina_dir, value):
    store = VoiceStore(tmp_path)
    store.add("tuned", state=lina_dir / "speaker_state.safetensors")
    path = tmp_path / "voices/tuned/voice.yaml"
    path.write_text(path.read_text() + f"frames_per_char: {json.dumps(value)}\n")
    (info,) = store.list()
    assert not info.installed and "frames_per_char" in info.problem
