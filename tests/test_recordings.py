"""Voices from speech nobody transcribed by hand: clips and long recordings transcribed by a real
Wyoming speech-to-text server (pocketsphinx), recordings cut at their pauses by the VAD, and the
``voice add`` / ``voice tune --recording`` commands on the fixture models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from fixture_support import model_args
from speech_support import SENTENCES, asr_server, espeak, write_recording, write_speech  # noqa: F401

from wyoming_lina.errors import VoiceError
from wyoming_lina.server.asr import TranscriptionError, WyomingTranscriber
from wyoming_lina.voices.recordings import prepare_pieces
from wyoming_lina.voices.splitting import VAD_RATE, VAD_WINDOW, SplitSettings, group_utterances, split_recording
from wyoming_lina.voices.store import VoiceStore


def test_transcriber_hears_words(asr_server):  # noqa: F811
    samples, rate = espeak(SENTENCES[0])
    text = WyomingTranscriber(asr_server.uri).transcribe_sync(samples, rate)
    assert len(set(text.split()) & set(SENTENCES[0].lower().rstrip(".").split())) >= 6, text


def test_transcriber_says_when_the_server_is_down():
    samples, rate = espeak("Hello.")
    with pytest.raises(TranscriptionError, match=r"cannot reach the speech-to-text server .*\(connection refused\)"):
        WyomingTranscriber("tcp://127.0.0.1:9").transcribe_sync(samples, rate)


def test_split_finds_every_sentence(tmp_path):
    where = write_recording(tmp_path / "long.wav")
    spans, rate, duration = split_recording(tmp_path / "long.wav")
    assert rate == 44100 and duration == pytest.approx(soundfile.info(str(tmp_path / "long.wav")).duration)
    assert len(spans) == len(where)
    for span, (start, end) in zip(spans, where):
        # espeak's clip ends with a little silence: the speech lies inside it, with padding
        assert start - 0.45 <= span.start <= start + 0.05, (span, start)
        assert end - 0.5 <= span.end <= end + 0.3, (span, end)
        assert 2.5 < span.seconds < 6


def test_long_speech_is_cut_where_speech_is_least_likely():
    hop = VAD_WINDOW / VAD_RATE
    probs = np.full(int(40 / hop), 0.95, dtype=np.float32)  # 40 s without a pause...
    dip = int(13 / hop)
    probs[dip] = 0.4  # ...but one uncertain window at 13 s (above the release: no pause)
    spans = group_utterances(probs, 40.0, SplitSettings(max_seconds=15.0))
    assert all(span.seconds <= 15.0 + 2 * SplitSettings().pad_seconds for span in spans)
    # cut at the dip; with no pause there, neither piece reaches into the other
    assert spans[0].end == pytest.approx(13.0, abs=0.05) and spans[1].start == pytest.approx(13.0, abs=0.05)
    assert spans[0].start == 0.0 and spans[-1].end == 40.0


def test_short_pieces_join_up_to_the_target_and_long_pauses_always_cut():
    hop = VAD_WINDOW / VAD_RATE
    probs = np.zeros(int(20 / hop), dtype=np.float32)
    for start, end in ((1.0, 2.0), (2.6, 3.5), (4.0, 5.0), (8.0, 9.0)):  # pauses: 0.6, 0.5, 3.0 s
        probs[int(start / hop) : int(end / hop)] = 0.9
    spans = group_utterances(probs, 20.0, SplitSettings(target_seconds=3.0, max_join_pause=1.5))
    assert len(spans) == 2
    assert spans[0].start == pytest.approx(0.8, abs=0.05) and spans[0].end == pytest.approx(5.2, abs=0.05)
    assert spans[1].start == pytest.approx(7.8, abs=0.05)


def test_pieces_drop_the_unusable_and_resume_without_transcribing_again(tmp_path, asr_server):  # noqa: F811
    rate = 22050
    said, _ = espeak(SENTENCES[2], pause=0.0)
    loud = np.clip(espeak(SENTENCES[3], pause=0.0)[0] * 12, -1, 1)  # clipped: distortion would be learned
    mumble = 0.3 * np.sin(2 * np.pi * 140 * np.arange(int(0.7 * rate)) / rate).astype(np.float32)
    gap = np.zeros(int(1.0 * rate), np.float32)
    recording = np.concatenate([gap, said, gap, loud, gap, mumble, gap])
    soundfile.write(str(tmp_path / "memo.wav"), recording, rate, subtype="PCM_16")
    transcriber = WyomingTranscriber(asr_server.uri)
    out = tmp_path / "pieces"
    heard_before = asr_server.heard()
    report = prepare_pieces([tmp_path / "memo.wav"], out, transcriber.transcribe_sync)
    assert report.kept == 1, report.summary()
    assert report.dropped["clipped"] == 1, report.summary()
    texts = sorted(out.glob("*.txt"))
    assert len(texts) == 1 and "kitchen" in texts[0].read_text()
    assert soundfile.info(str(texts[0].with_suffix(".wav"))).samplerate == rate  # the recording's own rate
    heard = asr_server.heard() - heard_before
    # again, with the speech-to-text server unreachable: every decision was written down
    again = prepare_pieces([tmp_path / "memo.wav"], out, WyomingTranscriber("tcp://127.0.0.1:9").transcribe_sync)
    assert (again.kept, again.dropped) == (report.kept, report.dropped)
    assert asr_server.heard() - heard_before == heard


def test_pieces_refuse_a_recording_with_no_speech(tmp_path, asr_server):  # noqa: F811
    soundfile.write(str(tmp_path / "hum.wav"), np.zeros(16000 * 5, np.float32), 16000)
    with pytest.raises(VoiceError, match="no usable speech"):
        prepare_pieces([tmp_path / "hum.wav"], tmp_path / "p", WyomingTranscriber(asr_server.uri).transcribe_sync)


# --- the commands -------------------------------------------------------------------------
def _voice(tmp_path: Path, lina_dir: Path, codec_dir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "wyoming_lina", "voice", *args,
        "--data-dir", str(tmp_path / "data"),
        *model_args(lina_dir, codec_dir),
        "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)


def test_voice_add_fills_the_transcript_in_through_speech_to_text(tmp_path, lina_dir, codec_dir, asr_server):  # noqa: F811
    clip = write_speech(tmp_path / "alice.wav", "Please turn on the kitchen lights and close the garage door.")
    done = _voice(tmp_path, lina_dir, codec_dir, "add", "alice", "--audio", str(clip), "--asr-uri", asr_server.uri)
    assert done.returncode == 0, done.stderr
    assert "transcript (from speech-to-text):" in done.stderr
    transcript = (tmp_path / "data/voices/alice/prompt.txt").read_text()
    assert "kitchen" in transcript and "garage" in transcript, transcript
    assert VoiceStore(tmp_path / "data").show("alice")["installed"]


def test_voice_add_without_a_transcript_says_what_to_do(tmp_path, lina_dir, codec_dir):
    clip = write_speech(tmp_path / "alice.wav", "Hello there, this is my voice.")
    done = _voice(tmp_path, lina_dir, codec_dir, "add", "alice", "--audio", str(clip))
    assert done.returncode == 1
    assert "give --asr-uri" in done.stderr
    down = _voice(tmp_path, lina_dir, codec_dir, "add", "alice", "--audio", str(clip), "--asr-uri", "tcp://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach the speech-to-text server" in down.stderr
    assert not (tmp_path / "data/voices/alice").exists()


def test_voice_tune_from_a_recording(tmp_path, lina_dir, codec_dir, asr_server):  # noqa: F811
    write_recording(tmp_path / "long.wav")
    progress = tmp_path / "progress.json"
    done = _voice(
        tmp_path, lina_dir, codec_dir, "tune", "bob", "--recording", str(tmp_path / "long.wav"),
        "--asr-uri", asr_server.uri, "--max-steps", "4", "--eval-every", "2", "--no-progress",
        "--progress-file", str(progress),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pieces" in done.stderr and "kept from 1 recording" in done.stderr
    state = json.loads(progress.read_text())
    assert state["state"] == "done" and state["progress"] == 1.0 and state["step"] == 4
    show = VoiceStore(tmp_path / "data").show("bob")
    assert show["kind"] == "state" and show["installed"], show
    assert len(list((tmp_path / "data/voices/bob/tuning/pieces").glob("*.txt"))) == len(SENTENCES)


def test_voice_tune_from_a_recording_leaves_no_half_voice(tmp_path, lina_dir, codec_dir):
    write_recording(tmp_path / "long.wav", SENTENCES[:2])
    progress = tmp_path / "progress.json"
    done = _voice(
        tmp_path, lina_dir, codec_dir, "tune", "bob", "--recording", str(tmp_path / "long.wav"),
        "--asr-uri", "tcp://127.0.0.1:9", "--max-steps", "2", "--no-progress", "--progress-file", str(progress),
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot reach the speech-to-text server" in done.stderr
    state = json.loads(progress.read_text())
    assert state["state"] == "failed" and "speech-to-text" in state["error"]
    assert not (tmp_path / "data/voices/bob").exists()
