"""``wyoming-lina speak``: the whole command on the fixture models, and the WAV it writes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import wave

import numpy as np
import pytest
import soundfile
from fixture_support import model_args

from wyoming_lina.server.speak import wav_bytes, write_wav


def test_speak_writes_a_24khz_16bit_mono_wav(tmp_path, lina_dir, codec_dir):
    from wyoming_lina.voices.store import VoiceStore

    VoiceStore(tmp_path / "data").add("fixture", state=lina_dir / "speaker_state.safetensors")
    out = tmp_path / "out.wav"
    args = [
        sys.executable, "-m", "wyoming_lina", "speak", "Hello there. How are you?",
        "-o", str(out),
        "--voice", "fixture",
        "--seed", "3",
        "--data-dir", str(tmp_path / "data"),
        "--device", "cpu",
        *model_args(lina_dir, codec_dir),
        "--max-sentence-seconds", "0.4",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, capture_output=True, env=env, cwd=tmp_path, timeout=120)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 0, stderr
    assert result.stdout == b""  # logs go to stderr, audio to the file
    assert "CC BY-NC 4.0" in stderr  # the licence notice is shown
    info = soundfile.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
    samples, _ = soundfile.read(str(out), dtype="int16")
    assert len(samples) > 0.2 * 24000 and np.abs(samples).max() > 0


def test_unknown_voice_fails_cleanly(tmp_path, lina_dir, codec_dir):
    args = [
        sys.executable, "-m", "wyoming_lina", "speak", "Hi.", "-o", "-", "--voice", "nobody",
        "--data-dir", str(tmp_path), "--device", "cpu",
        *model_args(lina_dir, codec_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, capture_output=True, env=env, cwd=tmp_path, timeout=120)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 1, stderr
    assert "nobody" in stderr and "Traceback" not in stderr
    assert result.stdout == b""  # no half WAV on stdout


def test_wav_to_stdout(capfdbinary):
    samples = (np.sin(np.arange(2400) / 10) * 10000).astype(np.int16)
    write_wav("-", samples, 24000)
    data = capfdbinary.readouterr().out
    assert data == wav_bytes(samples, 24000)
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()) == (24000, 1, 2, 2400)
        assert np.array_equal(np.frombuffer(wav.readframes(2400), "<i2"), samples)


def _speak(tmp_path, lina_dir, codec_dir, text: str, output: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable, "-m", "wyoming_lina", "speak", text, "-o", output,
        "--data-dir", str(tmp_path / "data"), "--device", "cpu",
        *model_args(lina_dir, codec_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize(
    "text, output, words",
    [
        ("", "out.wav", "nothing to say"),
        ("  \n ", "out.wav", "nothing to say"),
        ("Hi.", "/nonexistent/x.wav", "/nonexistent does not exist"),
        ("Hi.", ".", "is a folder"),
    ],
)
def test_a_request_speak_cannot_fulfil_fails_in_one_line_before_loading(
    tmp_path, lina_dir, codec_dir, text, output, words
):
    result = _speak(tmp_path, lina_dir, codec_dir, text, output)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert "CC BY-NC" not in result.stderr  # refused before the model files were even looked at
    assert not (tmp_path / "out.wav").exists() and not (tmp_path / "data").exists()
