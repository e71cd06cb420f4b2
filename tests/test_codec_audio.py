"""Voice clips in any format -> codes; audio files -> samples, with clear errors for bad files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import soxr
import torch

from wyoming_lina.codec import pcm_to_float, read_audio, to_codec_rate
from wyoming_lina.errors import AudioFileError


def chirp(rate: int, seconds: float = 0.5, f0: float = 200.0, f1: float = 3000.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (amp * np.sin(phase)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_any_rate_is_resampled_to_24k(codec, rate):
    clip = chirp(rate)
    codes = codec.encode_clip(clip, rate)
    n24 = len(soxr.resample(clip, rate, 24000, quality="HQ"))
    assert n24 == pytest.approx(len(clip) * 24000 / rate, abs=1)
    assert codes.dtype == torch.int64 and codes.shape == (math.ceil(n24 / 320),)
    assert codes.device.type == "cpu"
    expect = codec.encode(torch.from_numpy(soxr.resample(clip, rate, 24000, quality="HQ"))[None])[0]
    assert torch.equal(codes, expect)


def test_24k_float_clip_equals_encode(codec):
    clip = chirp(24000, 1.0)
    assert torch.equal(codec.encode_clip(clip, 24000), codec.encode(torch.from_numpy(clip)[None])[0])


def test_stereo_is_channel_mean(codec):
    left, right = chirp(16000, f0=300), chirp(16000, f0=900, amp=0.2)
    stereo = np.stack([left, right], axis=1)  # (N, C) as soundfile gives it
    mean = ((left.astype(np.float64) + right) / 2).astype(np.float32)
    assert torch.equal(codec.encode_clip(stereo, 16000), codec.encode_clip(mean, 16000))
    np.testing.assert_allclose(
        to_codec_rate(np.stack([left] * 6, axis=1), 16000), to_codec_rate(left, 16000), atol=1e-6
    )


def test_channels_first_is_refused():
    with pytest.raises(AudioFileError, match=r"\(frames, channels\)"):
        to_codec_rate(np.zeros((2, 16000), np.float32), 16000)


def test_integer_pcm_is_scaled(codec):
    pcm16 = (chirp(16000) * 32767).astype(np.int16)
    assert pcm_to_float(pcm16).dtype == np.float32
    np.testing.assert_array_equal(pcm_to_float(pcm16), pcm16.astype(np.float32) / 32768)
    assert torch.equal(codec.encode_clip(pcm16, 16000), codec.encode_clip(pcm16 / np.float32(32768), 16000))
    np.testing.assert_allclose(pcm_to_float(np.array([-(2**31), 0, 2**30], np.int32)), [-1.0, 0.0, 0.5])
    np.testing.assert_allclose(pcm_to_float(np.array([0, 128, 192, 255], np.uint8)), [-1.0, 0.0, 0.5, 127 / 128])
    np.testing.assert_allclose(pcm_to_float(np.array([-128, 64], np.int8)), [-1.0, 0.5])
    assert pcm_to_float(np.array([0.25], np.float64)).dtype == np.float32


def test_clip_shorter_than_a_frame(codec):
    codes = codec.encode_clip(chirp(16000)[:100], 16000)  # 150 samples at 24 kHz
    assert codes.shape == (1,)
    assert codec.encode_clip(np.array([0.1, -0.2, 0.3], np.float32), 24000).shape == (1,)
    assert codec.encode_clip(np.array([1000], np.int16), 8000).shape == (1,)


def test_silence_gives_one_repeated_code(codec):
    codes = codec.encode_clip(np.zeros(48000, np.int16), 48000)
    assert codes.shape == (75,)
    assert (codes == codes[0]).all()


@pytest.mark.parametrize("bad", [np.zeros(0, np.float32), np.array([np.nan, 0.1], np.float32)])
def test_empty_or_nan_clip(codec, bad):
    with pytest.raises(AudioFileError):
        codec.encode_clip(bad, 16000)


def test_bad_sample_rate(codec):
    for rate in (0, -16000, 16000.5):
        with pytest.raises(AudioFileError, match="sample rate"):
            codec.encode_clip(chirp(16000), rate)


# ---- files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, subtype, atol", [("WAV", "PCM_16", 1 / 32768), ("FLAC", "PCM_24", 1 / 2**23), ("WAV", "FLOAT", 0)]
)
def test_read_audio_round_trip(tmp_path, fmt, subtype, atol):
    left, right = chirp(22050, f0=300), chirp(22050, f0=700, amp=0.3)
    path = tmp_path / f"clip.{fmt.lower()}"
    soundfile.write(str(path), np.stack([left, right], axis=1), 22050, format=fmt, subtype=subtype)
    samples, rate = read_audio(path)
    assert rate == 22050 and samples.dtype == np.float32 and samples.shape == left.shape
    np.testing.assert_allclose(samples, (left + right) / 2, atol=atol + 1e-7)
    both, _ = read_audio(path, mono=False)
    assert both.shape == (len(left), 2)
    np.testing.assert_allclose(both[:, 1], right, atol=atol + 1e-7)


def test_unreadable_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x01 definitely not audio " * 20)
    silent = tmp_path / "no_frames.wav"
    soundfile.write(str(silent), np.zeros(0, np.float32), 16000)
    for path, message in [
        (empty, "cannot read"),
        (garbage, "cannot read"),
        (silent, "contains no audio"),
        (tmp_path / "nope.wav", "not found"),
    ]:
        with pytest.raises(AudioFileError, match=message):
            read_audio(path)
    with pytest.raises(AudioFileError, match=tmp_path.name + "|cannot read|not found"):
        read_audio(tmp_path)  # a directory
