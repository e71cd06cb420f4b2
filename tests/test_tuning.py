"""Initial-state tuning on the tiny fixture model: loss, batching, checkpoints, the stored state."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
import yaml
from fixture_support import model_args

from wyoming_lina.engine.lengths import speaking_rate
from wyoming_lina.errors import VoiceError
from wyoming_lina.model import BOS, EOS, SpeakerState, load_lina
from wyoming_lina.voices import VoiceStore, cli
from wyoming_lina.voices.batches import BatchPlan, collate, split_examples
from wyoming_lina.voices.dataset import TuningExample, prepare_examples, read_dataset
from wyoming_lina.voices.files import load_tensors
from wyoming_lina.voices.training import TuningConfig, batch_loss, evaluate, tune_state
from wyoming_lina.voices.tuning import tune_voice

TEXTS = [
    "hello there",
    "good morning to you",
    "turn on the kitchen light",
    "it is warm outside today",
    "please open the garage door",
    "see you soon",
    "the music is too loud",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def synth_clip(i: int, rate: int = 16000) -> np.ndarray:
    """Chirps and noise bursts of 0.6-1.2 s: short, distinct, deterministic."""
    rng = np.random.default_rng(i)
    n = int(rate * (0.6 + 0.1 * i))
    t = np.arange(n) / rate
    chirp = np.sin(2 * np.pi * (150 + 40 * i + 300 * t) * t)
    noise = rng.standard_normal(n) * (np.sin(2 * np.pi * 3 * t) > 0)
    return (0.25 * chirp + 0.05 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for i, text in enumerate(TEXTS):
        soundfile.write(str(root / f"clip{i}.wav"), synth_clip(i), 16000)
        (root / f"clip{i}.txt").write_text(text + "\n")
    soundfile.write(str(root / "orphan.wav"), synth_clip(9), 16000)  # no transcript
    return root


@pytest.fixture(scope="module")
def examples(clip_dir, codec, tokenizer, model):
    items, notes = read_dataset(clip_dir)
    found, report = prepare_examples(items, codec, tokenizer, n_codes=model.config.n_codes)
    assert report.used == len(TEXTS) and notes == ["orphan: no transcript orphan.txt"]
    return found


# --- data ----------------------------------------------------------------------------------
def test_read_ljspeech_layout(tmp_path, codec, tokenizer):
    (tmp_path / "wavs").mkdir()
    lines = []
    for i, text in enumerate(TEXTS[:3]):
        soundfile.write(str(tmp_path / "wavs" / f"LJ{i}.wav"), synth_clip(i), 16000)
        lines.append(f"LJ{i}|{text.upper()} 2|{text} two")
    lines += ["LJ9|missing clip|missing clip", "broken line", "LJ0|again|again"]
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    items, notes = read_dataset(tmp_path)
    assert [(i.id, i.text) for i in items] == [(f"LJ{i}", f"{t} two") for i, t in enumerate(TEXTS[:3])]
    assert len(notes) == 3
    # a silent clip and an unsayable transcript are skipped and counted
    soundfile.write(str(tmp_path / "wavs" / "LJ1.wav"), np.zeros(16000, np.float32), 16000)
    items[2] = type(items[2])(items[2].id, items[2].audio, "🎉")
    cache = tmp_path / "cache.safetensors"
    found, report = prepare_examples(items, codec, tokenizer, cache)
    assert [e.id for e in found] == ["LJ0"] and report.skipped["silent"] == 1 and report.encoded == 1
    assert sum(report.skipped.values()) == 2
    found_again, report = prepare_examples(items, codec, tokenizer, cache)
    assert report.encoded == 0 and torch.equal(found_again[0].codes, found[0].codes)  # from the cache


def test_read_dataset_refuses_an_empty_folder(tmp_path):
    with pytest.raises(VoiceError, match="no clips with transcripts"):
        read_dataset(tmp_path)
    with pytest.raises(VoiceError, match="not found"):
        read_dataset(tmp_path / "nope")


def test_collate_builds_upstream_inputs_and_targets():
    a = TuningExample("a", [1, 5, 6, 2], torch.tensor([0, 1, 2]))
    b = TuningExample("b", [1, 7, 2], torch.tensor([10]))
    text, mask, audio, targets = collate([a, b], "cpu")
    assert text.tolist() == [[1, 5, 6, 2], [1, 7, 2, 0]]
    assert mask.tolist() == [[True] * 4, [True, True, True, False]]
    assert audio.tolist() == [[BOS, 3, 4, 5], [BOS, 13, 0, 0]]
    assert targets.tolist() == [[3, 4, 5, EOS], [13, EOS, BOS, BOS]]  # padding ignored as BOS


def test_a_padded_batch_has_the_loss_of_its_rows_alone(model, examples):
    state = SpeakerState(model.config, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        batch = float(batch_loss(model, state, examples[:3], reduction="sum"))
        alone = sum(float(batch_loss(model, state, [e], reduction="sum")) for e in examples[:3])
        # and the sum equals upstream's loss written out for one row
        e = examples[0]
        text, _, audio, targets = collate([e], "cpu")
        logits = model.teacher_forced_logits(text, audio, initial_state=state.initial_state())
        direct = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=BOS, reduction="sum")
        mine = float(batch_loss(model, state, [e], reduction="sum"))
    assert math.isclose(batch, alone, rel_tol=1e-5)
    assert math.isclose(mine, float(direct), rel_tol=1e-6)


def test_batch_plan_is_deterministic_and_covers_every_clip():
    lengths = [5, 50, 7, 48, 9, 52, 6, 49, 8]
    plan = BatchPlan(lengths, batch_size=2, seed=1, bucket_batches=16)
    assert plan.batches_per_epoch == 5
    epoch = [plan[i] for i in range(5)]
    assert sorted(i for b in epoch for i in b) == list(range(9))
    by_length = sorted(range(9), key=lengths.__getitem__)  # one bucket: batches are neighbours by length
    assert sorted(sorted(b, key=lengths.__getitem__) for b in epoch) == sorted(
        by_length[i : i + 2] for i in range(0, 9, 2)
    )
    again = BatchPlan(lengths, batch_size=2, seed=1)
    assert [again[i] for i in range(10)] == [plan[i] for i in range(10)]
    assert [plan[i] for i in range(5, 10)] != epoch  # a new epoch, a new order
    assert [BatchPlan(lengths, 2, seed=2)[i] for i in range(5)] != epoch


def test_split_is_deterministic(examples):
    train, val = split_examples(examples, None, seed=0)
    assert len(val) == 1 and len(train) == len(examples) - 1
    assert split_examples(examples, None, seed=0)[1][0].id == val[0].id
    assert split_examples(examples[:4], None, seed=0)[1] == []
    with pytest.raises(VoiceError, match="leave none"):
        split_examples(examples[:2], 2, seed=0)


def test_settings_are_validated():
    with pytest.raises(VoiceError, match="lr must be positive"):
        TuningConfig(lr=0)
    with pytest.raises(VoiceError, match="batch size"):
        TuningConfig(batch_size=0)


# --- training ------------------------------------------------------------------------------
CONFIG = TuningConfig(max_steps=6, batch_size=2, grad_accum=2, eval_every=3, lr=0.1, seed=0)


def test_tuning_lowers_the_training_loss(model, examples):
    train, val = split_examples(examples, 1, seed=0)
    start = SpeakerState(model.config, generator=torch.Generator().manual_seed(CONFIG.seed))
    before = evaluate(model, start, train)
    result = tune_state(model, train, val, CONFIG, progress=False)
    after = evaluate(model, result.state, train)
    print(f"training loss {before:.4f} -> {after:.4f}")
    assert result.step == 6 and result.stop_reason == "max_steps"
    assert after < before - 0.05, (before, after)
    assert [h["step"] for h in result.history] == list(range(7))
    assert [h["step"] for h in result.history if "val_loss" in h] == [0, 3, 6]
    assert result.best_val_loss == min(h["val_loss"] for h in result.history if "val_loss" in h)
    assert result.clips_seen == 6 * 2 * 2
    assert not any(p.requires_grad for p in model.parameters())


def test_resume_continues_exactly_where_it_stopped(model, examples, tmp_path):
    train, val = split_examples(examples, 1, seed=0)
    config = TuningConfig(max_steps=4, batch_size=2, grad_accum=2, eval_every=2)
    straight = tune_state(model, train, val, config, checkpoint_path=tmp_path / "a.pt", progress=False)
    first = tune_state(
        model,
        train,
        val,
        TuningConfig(**{**config.__dict__, "max_steps": 2}),
        checkpoint_path=tmp_path / "b.pt",
        progress=False,
    )
    assert first.step == 2
    resumed = tune_state(model, train, val, config, checkpoint_path=tmp_path / "b.pt", resume=True, progress=False)
    assert resumed.step == 4 and resumed.history == straight.history and len(resumed.history) == 5
    for (name, p), (_, q) in zip(straight.state.named_parameters(), resumed.state.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    with pytest.raises(VoiceError, match="settings differ: rank"):
        tune_state(
            model,
            train,
            val,
            TuningConfig(**{**config.__dict__, "rank": 2}),
            checkpoint_path=tmp_path / "b.pt",
            resume=True,
            progress=False,
        )
    with pytest.raises(VoiceError, match="training clips changed"):
        tune_state(model, train[:-1], val, config, checkpoint_path=tmp_path / "b.pt", resume=True, progress=False)
    with pytest.raises(VoiceError, match="nothing to resume"):
        tune_state(model, train, val, config, checkpoint_path=tmp_path / "c.pt", resume=True, progress=False)


def test_budgets_and_early_stopping(model, examples):
    train, val = split_examples(examples, 1, seed=0)
    timed = tune_state(model, train, val, TuningConfig(max_minutes=1e-9), progress=False)
    assert timed.stop_reason == "time_budget" and timed.step == 0
    # nothing counts as an improvement: stop after `patience` evaluations
    early = tune_state(
        model,
        train,
        val,
        TuningConfig(max_steps=50, grad_accum=1, eval_every=1, patience=2, min_delta=1e9),
        progress=False,
    )
    assert early.stop_reason == "early_stopping" and early.step == 2
    # the best state is kept: here the initial one
    start = SpeakerState(model.config, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(p, q) for p, q in zip(early.state.parameters(), start.parameters(), strict=True))


def test_tuned_voice_is_stored_in_upstream_format_and_changes_the_output(
    model, codec, tokenizer, clip_dir, examples, tmp_path
):
    store = VoiceStore(tmp_path, codec=codec, model=model, tokenizer=tokenizer)
    outcome = tune_voice(
        store, "Tuned", clip_dir, model=model, codec=codec, tokenizer=tokenizer,
        settings={"max_steps": 3, "grad_accum": 1, "eval_every": 3}, description="tuned on chirps", progress=False,
    )  # fmt: skip
    assert outcome.info.kind == "state" and outcome.info.installed and outcome.info.description == "tuned on chirps"
    assert outcome.result.step == 3 and outcome.report.used == len(TEXTS)
    assert any("3 to 15 minutes" in w for w in outcome.warnings)
    path = tmp_path / "voices/Tuned/state.safetensors"
    tensors, _ = load_tensors(path)
    assert sorted(tensors) == sorted(f"layer{i}_{kv}" for i in range(4) for kv in "kv")
    assert all(t.dtype == torch.float32 for t in tensors.values())
    assert tensors["layer0_k"].shape == (1, 1, 2, 16, 1) and tensors["layer0_v"].shape == (1, 1, 2, 1, 32)
    loaded = SpeakerState.from_file(path, model.config)
    for (name, p), (_, q) in zip(outcome.result.state.named_parameters(), loaded.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    voice = store.get("tuned")
    assert voice.prompt_codes is None
    # the speaker's rate over the clips (frames / characters) is recorded, and bounds what it says
    meta = yaml.safe_load((tmp_path / "voices/Tuned/voice.yaml").read_text())
    rate = speaking_rate(sum(e.frames for e in examples), sum(e.chars for e in examples))
    assert sum(e.chars for e in examples) == sum(len(t) for t in TEXTS)
    assert meta["frames_per_char"] == round(rate, 3) == voice.frames_per_char
    with torch.no_grad():
        expected = outcome.result.state.initial_state().S
    assert all(torch.equal(a, b) for a, b in zip(voice.initial_state.S, expected, strict=True))
    text = torch.tensor([tokenizer.encode("hello there")])
    audio = torch.tensor([[BOS, 5, 9, 12, 40]])
    with torch.no_grad():
        plain = model.teacher_forced_logits(text, audio)
        tuned = model.teacher_forced_logits(text, audio, initial_state=voice.initial_state)
    assert (plain - tuned).abs().max() > 1e-3
    # tuning again needs --resume or --overwrite
    with pytest.raises(VoiceError, match="already has a tuned state"):
        tune_voice(store, "tuned", clip_dir, model=model, codec=codec, tokenizer=tokenizer, progress=False)
    assert (tmp_path / "voices/Tuned/tuning/checkpoint.pt").is_file()
    assert (tmp_path / "voices/Tuned/tuning/clips.codes.safetensors").is_file()


def test_cli_tune_then_resume_and_a_prompt_voice_keeps_its_clip(lina_dir, codec_dir, clip_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.add_voice_parser(parser.add_subparsers(dest="command"))
    files = [
        "--data-dir", str(tmp_path), *model_args(lina_dir, codec_dir), "--device", "cpu",
    ]  # fmt: skip
    clip = clip_dir / "clip6.wav"
    add = ["voice", "add", "amy", "--audio", str(clip), "--text", TEXTS[6], *files]
    assert cli.run(parser.parse_args(add)) == 0
    tune = [
        "voice",
        "tune",
        "amy",
        "--data",
        str(clip_dir),
        "--max-steps",
        "2",
        "--grad-accum",
        "1",
        "--eval-every",
        "2",
        "--no-progress",
        *files,
    ]
    assert cli.run(parser.parse_args(tune)) == 0
    out = capsys.readouterr()
    assert "2 steps (max_steps)" in out.out and "voice 'amy' is ready (prompt+state)" in out.out
    assert "skipped" not in out.err and "left out orphan" in out.err
    store = VoiceStore(tmp_path, model=load_lina(lina_dir / "model.ckpt"))
    voice = store.get("amy")
    assert voice.prompt_codes is not None and voice.initial_state is not None
    first_state = load_tensors(tmp_path / "voices/amy/state.safetensors")[0]
    assert cli.run(parser.parse_args(tune)) == 1
    assert "already has a tuned state" in capsys.readouterr().err
    resume = [*tune[:5], "--max-steps", "3", *tune[7:], "--resume"]
    assert cli.run(parser.parse_args(resume)) == 0
    assert "3 steps (max_steps)" in capsys.readouterr().out
    second_state = load_tensors(tmp_path / "voices/amy/state.safetensors")[0]
    assert any(not torch.equal(first_state[k], second_state[k]) for k in first_state)
    assert cli.run(parser.parse_args([*resume, "--rank", "2"])) == 1
    assert "cannot change rank when resuming" in capsys.readouterr().err
    assert store.list()[0].kind == "prompt+state"


def test_cli_tune_needs_the_model_files(tmp_path, clip_dir, capsys):
    parser = argparse.ArgumentParser()
    cli.add_voice_parser(parser.add_subparsers(dest="command"))
    assert cli.run(parser.parse_args(["voice", "tune", "x", "--data", str(clip_dir), "--data-dir", str(tmp_path)])) == 1
    err = capsys.readouterr().err
    assert (
        f"needs the model files and found none in {tmp_path / 'models'} for --lina-checkpoint, --codec-checkpoint, --tokenizer"
        in err
    )
    assert not (tmp_path / "voices/x").exists()


def test_tuning_with_no_usable_clip_leaves_nothing_behind(model, codec, tokenizer, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    soundfile.write(str(data / "a.wav"), np.zeros(16000, np.float32), 16000)
    (data / "a.txt").write_text("hello there")
    store = VoiceStore(tmp_path / "store", codec=codec, model=model, tokenizer=tokenizer)
    with pytest.raises(VoiceError, match="none of the 1 clips can be used: 0 of 1 clips used.*1 silent"):
        tune_voice(store, "x", data, model=model, codec=codec, tokenizer=tokenizer, progress=False)
    assert not (tmp_path / "store/voices/x").exists() and store.list() == []
