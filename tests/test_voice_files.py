"""Hostile and broken voice files, transcripts the model can never take, and racing writers.

Each attack is the test's input; the expectation is that the store keeps listing and loading
the other voices, that what ``describe`` shows stays within fixed bounds, and that nothing a
user made is lost.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from wyoming_lina.defaults import MAX_TEXT_TOKENS, max_transcript_tokens
from wyoming_lina.errors import VoiceError
from wyoming_lina.server.info import InfoBuilder
from wyoming_lina.voices import VoiceStore, cli
from wyoming_lina.voices.storage import VoiceExistsError, VoiceFolders
from wyoming_lina.voices.transcripts import MAX_TRANSCRIPT_CHARS

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
RATE = 24000

# The shape that stalled describe for 38 s: 600 bytes, nested aliases in the description.
BILLION_LAUGHS = "\n".join(
    [
        "kind: state",
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{chr(ord('b') + i)}: &{chr(ord('b') + i)} [{','.join(['*' + chr(ord('a') + i)] * 9)}]" for i in range(7)),
        f"description: [{','.join(['*h'] * 9)}]",
        "",
    ]
)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(120 + 40 * np.sin(2 * np.pi * 0.7 * t)) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    return (0.2 * voiced + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def clip(path: Path, seconds: float = 4.0) -> Path:
    soundfile.write(str(path), speech_like(seconds), RATE)
    return path


def state_voice(store: VoiceStore, name: str, lina_dir: Path) -> Path:
    store.add(name, state=lina_dir / "speaker_state.safetensors")
    return store.voices_dir / name / "voice.yaml"


def info_event_bytes(store: VoiceStore) -> int:
    """Size of the ``info`` event Home Assistant gets for ``describe``."""
    return len(json.dumps(InfoBuilder(store.list).build().event().to_dict()))


# --- voice.yaml --------------------------------------------------------------------------
def test_a_billion_laughs_voice_yaml_is_refused_fast_and_the_others_stay(tmp_path, lina_dir, model, caplog):
    store = VoiceStore(tmp_path, model=model)
    state_voice(store, "good", lina_dir)
    attack = state_voice(store, "laughs", lina_dir)
    attack.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 700
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    for _ in range(20):  # Home Assistant describes often
        infos = {i.name: i for i in store.list()}
    assert time.monotonic() - started < 10  # a guard against the 38 s stall, not a benchmark
    assert infos["good"].installed and store.get("good").initial_state is not None
    assert not infos["laughs"].installed and "anchors and aliases" in infos["laughs"].problem
    with pytest.raises(VoiceError, match="anchors and aliases"):
        store.get("laughs")
    assert info_event_bytes(store) < 2000
    assert len([r for r in caplog.records if "laughs" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    "addition, words",
    [
        ("description: " + "[" * 5000 + "]" * 5000, "nested more than 32 levels"),
        ("description: {a: 1}", "description must be text, not dict"),
        ("description: " + "x" * 501, "description is 501 characters long; the limit is 500"),
        ("languages: [" + ", ".join(["en"] * 17) + "]", "17 languages; the limit is 16"),
        ("languages: [" + "e" * 40 + "]", "is not a language code"),
        ("languages: 7", "languages must be a language code or a non-empty list"),
        ("kind: [state]", "kind must be one of"),
        ("created: [1, 2]", "created must be text, not list"),
        ("source: " + "s" * 2001, "source is 2001 characters long; the limit is 2000"),
        ("text: " + "word " * 400, f"text is 1999 characters long; the limit is {MAX_TRANSCRIPT_CHARS}"),
        ("text: 12", "text must be text, not int"),
        ("generated: lol", "generated must be a mapping"),
        ("generated: {text: " + "x" * 501 + "}", "generated.text is 501 characters long"),
        ("generated: {seed: [1, 2]}", "generated.seed must be text, a number or true/false"),
        ("frames_per_char: 1" + "0" * 5000, "holds a value that cannot be read"),
        ("description: !!python/object/apply:os.system [echo]", "not valid YAML"),
        ("# " + "x" * 40_000, "is larger than 32 KiB"),
        ("description: \xff", None),  # not UTF-8: written as bytes below
        ("kind: state\nkind: prompt", "the key 'kind' appears twice"),
    ],
)
def test_every_field_of_voice_yaml_is_checked_and_bounded(tmp_path, lina_dir, addition, words):
    store = VoiceStore(tmp_path)
    path = state_voice(store, "v", lina_dir)
    fine = info_event_bytes(store)
    base = {"kind": "kind: state", "languages": "languages: [en]"}
    key = addition.split(":")[0]
    text = "\n".join([line for k, line in base.items() if k != key] + [addition]) + "\n"
    if words is None:
        path.write_bytes(text.replace("\xff", "").encode() + b"\xff\n")
        words = "not a text file (not UTF-8)"
    else:
        path.write_text(text)
    (info,) = store.list()
    assert not info.installed and words in info.problem
    assert len(info.problem) < 400 + len(str(path))  # no value is copied into the message whole
    assert info_event_bytes(store) <= fine + 50  # what describe shows does not grow with the file


def test_what_the_tools_write_passes_the_checks(tmp_path, lina_dir, codec, model, tokenizer):
    store = VoiceStore(tmp_path, codec=codec, model=model, tokenizer=tokenizer)
    store.add("a", audio=clip(tmp_path / "c.wav"), text="hello there my friend", description="d" * 500)
    path = store.voices_dir / "a" / "voice.yaml"
    lines = [line for line in path.read_text().splitlines() if not line.startswith("created:")]
    path.write_text("\n".join([*lines, "created: 2024-05-01", "notes: anything"]) + "\n")  # hand-written: a date
    from wyoming_lina.voices import DefaultVoiceRecipe, ensure_default_voice

    ensure_default_voice(store, recipe=DefaultVoiceRecipe(max_seconds=2.0, attempts=2))  # the `generated` recipe
    assert all(i.installed for i in store.list()), store.list()
    assert store.show("a")["created"] == "2024-05-01"
    with pytest.raises(VoiceError, match="description is 501 characters long"):
        store.add("b", audio=clip(tmp_path / "c.wav"), text="hello there my friend", description="d" * 501)


def test_a_huge_prompt_txt_is_not_read_whole(tmp_path, lina_dir, codec):
    store = VoiceStore(tmp_path, codec=codec)
    store.add("v", audio=clip(tmp_path / "c.wav"), text="hello there my friend")
    with open(store.voices_dir / "v" / "prompt.txt", "w") as f:
        f.write("word " * 2_000_000)  # 10 MB
    (info,) = store.list()
    assert not info.installed and f"longer than {MAX_TRANSCRIPT_CHARS} characters" in info.problem


# --- the voices file ---------------------------------------------------------------------
def test_hostile_voices_files_are_refused_and_the_folders_stay(tmp_path, lina_dir, caplog):
    config = tmp_path / "voices.yaml"
    store = VoiceStore(tmp_path / "data", config_path=config)
    state_voice(store, "good", lina_dir)
    state = lina_dir / "speaker_state.safetensors"
    attacks = {
        BILLION_LAUGHS.replace("kind: state", f"alice:\n  state: {state}").replace(
            "description:", "bob:"
        ): "anchors and aliases",
        "voices:\n" + "".join(f"  v{i}: {{state: x}}\n" for i in range(1001)): "lists 1001 voices; the limit is 1000",
        f"alice: {{state: {state}}}\n# {'x' * (1 << 20)}\n": "larger than 1024 KiB",
        "a: " + "[" * 40 + "]" * 40: "nested more than 32 levels",
    }
    caplog.set_level(logging.WARNING, logger="wyoming_lina")
    for text, words in attacks.items():
        config.write_text(text)
        infos = {i.name: i for i in store.list()}
        assert list(infos) == ["good"] and infos["good"].installed, words
        assert words in caplog.records[-1].getMessage()
    config.write_text(f"alice: {{state: {state}}}\n")  # mended: read again at once
    assert [i.name for i in store.list() if i.installed] == ["alice", "good"]


def test_each_voice_of_the_voices_file_is_checked(tmp_path, lina_dir):
    state = lina_dir / "speaker_state.safetensors"
    (tmp_path / "huge.txt").write_text("word " * 1_000_000)
    config = tmp_path / "voices.yaml"
    config.write_text(
        f"ok: {{state: {state}}}\n"
        "wrongtype: {audio: [a.wav], text: hi}\n"
        f"longdesc: {{state: {state}, description: {'d' * 600}}}\n"
        f"hugetext: {{audio: a.wav, text_file: huge.txt}}\n"
        f"manylangs: {{state: {state}, languages: [{', '.join(['en'] * 20)}]}}\n"
        "42: {state: x}\n"
        '"bad\\nname": {state: x}\n'
    )
    clip(tmp_path / "a.wav")
    infos = {i.name: i for i in VoiceStore(tmp_path / "data", config_path=config).list()}
    assert sorted(infos) == ["hugetext", "longdesc", "manylangs", "ok", "wrongtype"]
    assert infos["ok"].installed
    assert "audio must be text, not list" in infos["wrongtype"].problem
    assert "description is 600 characters long" in infos["longdesc"].problem
    assert f"longer than {MAX_TRANSCRIPT_CHARS} characters" in infos["hugetext"].problem
    assert "20 languages; the limit is 16" in infos["manylangs"].problem


# --- logging -------------------------------------------------------------------------------
def test_names_on_disk_and_in_the_voices_file_cannot_forge_log_lines(tmp_path, lina_dir, caplog):
    config = tmp_path / "voices.yaml"
    config.write_text('"x\\nERROR forged line": {state: x}\nfine: {audio: "gone\\nERROR forged too.wav", text: hi}\n')
    store = VoiceStore(tmp_path / "data", config_path=config)
    state_voice(store, "good", lina_dir)
    (store.voices_dir / "evil\nERROR forged").mkdir()
    caplog.set_level(logging.DEBUG, logger="wyoming_lina")
    store.list()
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 3, logged
    assert all("\n" not in m for m in logged) and sum("\\n" in m for m in logged) == 3


# --- transcripts the model can never take (issue 19, #7) ---------------------------------
def test_a_transcript_longer_than_the_model_takes_is_refused_with_the_limit_in_words(tmp_path, codec, model, tokenizer):
    store = VoiceStore(tmp_path, codec=codec, model=model, tokenizer=tokenizer)
    wordy = " ".join(["hello there"] * 500)  # 1,000 words
    with pytest.raises(VoiceError, match=r"too long for the model: 1000 words .*at most about \d+ words"):
        store.add("wordy", audio=clip(tmp_path / "c.wav"), text=wordy)
    assert store.list() == [] and not store.voices_dir.exists()
    # the budget, measured on the transcript's own tokens: the longest that fits is accepted...
    budget = max_transcript_tokens(model.config.max_text_len)
    words = ["the", "kitchen", "lights", "are", "on", "and", "the", "door", "is", "closed"]
    text = ""
    while len(tokenizer.encode(f"{text} {words[len(text.split()) % 10]}".strip())) - 2 <= budget:
        text = f"{text} {words[len(text.split()) % 10]}".strip()
    store.add("longest", audio=clip(tmp_path / "c.wav", 20.0), text=text)
    voice = store.get("longest")
    # ...and with it, the longest sentence piece still fits the engine's text
    from wyoming_lina.engine.sampling import SamplingOptions
    from wyoming_lina.engine.synthesizer import SynthesisSettings, Synthesizer

    synth = Synthesizer(None, tokenizer, store, SynthesisSettings())
    worst = " ".join("b" * 150)  # every character a token of its own, past the 200-character piece
    jobs = synth.jobs_for(worst, voice, SamplingOptions())
    assert jobs and max(len(job.text_ids) for job in jobs) <= min(MAX_TEXT_TOKENS, model.config.max_text_len)
    assert max(len(job.text_ids) for job in jobs) > MAX_TEXT_TOKENS - 8  # the budget is not loose either
    # one word more is refused
    with pytest.raises(VoiceError, match="too long for the model"):
        store.add("longer", audio=clip(tmp_path / "c.wav", 20.0), text=f"{text} kitchen")


def test_without_a_tokenizer_the_bound_is_in_characters(tmp_path):
    store = VoiceStore(tmp_path)  # the CLI without model files
    with pytest.raises(
        VoiceError,
        match=rf"1000 words \(\d+ characters\); .*at most about \d+ words \({MAX_TRANSCRIPT_CHARS} characters\)",
    ):
        store.add("wordy", audio=clip(tmp_path / "c.wav"), text=" ".join(["hello there"] * 500))


def test_a_voice_file_with_a_transcript_too_long_is_not_usable(tmp_path, codec, model, tokenizer):
    VoiceStore(tmp_path, codec=codec).add("v", audio=clip(tmp_path / "c.wav"), text="hello there my friend")
    (tmp_path / "voices/v/prompt.txt").write_text(" ".join(["a b"] * 200))  # 799 characters, 799 tokens
    store = VoiceStore(tmp_path, codec=codec, model=model, tokenizer=tokenizer)
    (info,) = store.warm()
    assert not info.installed and "too long for the model: 400 words (799 tokens)" in info.problem


def test_the_cli_refuses_it_too(tmp_path, lina_dir, codec_dir, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_voice_parser(parser.add_subparsers(dest="command"))
    args = [
        "voice", "add", "wordy", "--audio", str(clip(tmp_path / "c.wav")), "--text", " ".join(["hello there"] * 500),
        "--data-dir", str(tmp_path / "data"), "--tokenizer", str(lina_dir / "bpe256.json"),
    ]  # fmt: skip
    assert cli.run(parser.parse_args(args)) == 1
    err = capsys.readouterr().err
    assert "too long for the model: 1000 words" in err and "tokens)" in err  # counted by the tokenizer


# --- racing writers and leftovers (issue 19, #10) ----------------------------------------
def test_the_name_taken_at_the_rename_is_reported_and_the_winner_stays(tmp_path):
    folders = VoiceFolders(tmp_path)
    (tmp_path / "v").mkdir(parents=True)
    (tmp_path / "v" / "voice.yaml").write_text("kind: state\n")
    with pytest.raises(VoiceExistsError), folders.staging("v") as staged:
        (staged / "voice.yaml").write_text("kind: prompt\n")
        folders.commit(staged, "v")
    assert (tmp_path / "v" / "voice.yaml").read_text() == "kind: state\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]  # the loser's folder is gone


RACER = """
import hashlib, sys, time
from pathlib import Path
from wyoming_lina.codec import load_codec
from wyoming_lina.model import load_lina
from wyoming_lina.text import LinaTokenizer
from wyoming_lina.voices import DefaultVoiceRecipe, VoiceStore, ensure_default_voice
lina, codec_dir, data, go, ready = map(Path, sys.argv[1:6])
store = VoiceStore(data, codec=load_codec(codec_dir / "config.yaml", codec_dir / "model.ckpt"),
                   model=load_lina(lina / "model.ckpt"), tokenizer=LinaTokenizer(lina / "bpe256.json"))
ready.touch()
while not go.exists():
    time.sleep(0.001)
voice = ensure_default_voice(store, recipe=DefaultVoiceRecipe(max_seconds=2.0, attempts=2))
print(hashlib.sha256(voice.prompt_codes.numpy().tobytes()).hexdigest())
"""


def test_servers_started_together_make_the_default_voice_once(tmp_path, lina_dir, codec_dir):
    data, go = tmp_path / "data", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACER,
                str(lina_dir),
                str(codec_dir),
                str(data),
                str(go),
                str(tmp_path / f"ready{i}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(3)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(3)) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    outs = [r.communicate(timeout=120) for r in racers]
    assert all(r.returncode == 0 for r in racers), [err[-2000:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1  # every server speaks with the same voice
    assert sorted(p.name for p in (data / "voices").iterdir()) == ["default"]


def test_leftovers_of_killed_writers_are_cleaned_at_start(tmp_path, lina_dir, model, caplog):
    store = VoiceStore(tmp_path, model=model)
    state_voice(store, "good", lina_dir)
    voices = store.voices_dir
    old, young = time.time() - 11 * 60, time.time() - 60
    for name, when in ((".tmp-alice-1234abcd", old), (".trash-bob-5678abcd", old), (".tmp-carol-0000abcd", young)):
        (voices / name).mkdir()
        (voices / name / "prompt.wav").write_bytes(b"half")
        os.utime(voices / name, (when, when))
    for folder, when in (("good", old), (".cache", young)):
        (voices / folder).mkdir(exist_ok=True)
        stray = voices / folder / ".voice.yaml.k2j3h4.tmp"
        stray.write_text("half")
        os.utime(stray, (when, when))
    caplog.set_level(logging.INFO, logger="wyoming_lina")
    (info,) = store.warm()  # the server's start
    assert info.name == "good" and info.installed
    assert sorted(p.name for p in voices.iterdir()) == [".cache", ".tmp-carol-0000abcd", "good"]
    assert not (voices / "good" / ".voice.yaml.k2j3h4.tmp").exists()
    assert (voices / ".cache" / ".voice.yaml.k2j3h4.tmp").exists()  # too young: maybe a live writer's
    assert sum("left by an interrupted write" in r.getMessage() for r in caplog.records) == 3


def test_the_store_says_what_is_wrong_and_the_cli_how_to_fix_it(tmp_path, lina_dir, capsys):
    import argparse

    store = VoiceStore(tmp_path / "data")
    state_voice(store, "alice", lina_dir)
    with pytest.raises(VoiceExistsError) as caught:
        store.add("Alice", state=lina_dir / "speaker_state.safetensors")
    assert "--" not in str(caught.value) and "already exists" in str(caught.value)
    parser = argparse.ArgumentParser()
    cli.add_voice_parser(parser.add_subparsers(dest="command"))
    args = [
        "voice",
        "add",
        "Alice",
        "--state",
        str(lina_dir / "speaker_state.safetensors"),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    assert cli.run(parser.parse_args(args)) == 1
    assert "already exists (names ignore case: 'alice'); remove it first or use --overwrite" in capsys.readouterr().err
    store.remove("alice")
    assert cli.run(parser.parse_args(["voice", "show", "bob", "--data-dir", str(tmp_path / "data")])) == 1
    assert "available voices: none (add one with: wyoming-lina voice add NAME" in capsys.readouterr().err
