"""Through the real server: ``wyoming-lina serve`` as its own process, the load from other processes.

    python bench/bench_server.py --device cpu --fixtures ../shared/fixtures --tiny      # development
    python bench/bench_server.py --device cuda --fixtures ../shared/fixtures --engine   # the real numbers

Writes the models the server loads into a work dir (``--tiny``: the fixture files; otherwise the
published shapes with random weights, ``bench/full_size.py`` and ``bench/codec_models.py``, as
safetensors) with a prompt voice and a state voice in its data dir, then starts ``wyoming-lina
serve`` and measures:

* start-up, in seconds since the process started: what a client sees by polling (port listening,
  ``describe`` answered, the first audio of a request sent as soon as the port listened, the time
  to first audio of a request sent during the warm-up) and the server's own log lines (model
  loaded, speaking, warm);
* per load (``--loads``, concurrent clients in ``--client-procs`` processes of
  ``bench/load_clients.py``; a new connection per request, two-sentence texts, the prompt voice):
  time to first audio p50/p95 (from writing ``synthesize`` to the first ``audio-chunk``), seconds
  of audio per wall second over all clients, errors, the server's event-loop CPU per request, and
  from its log how long after reading a request its sentences were all queued for the engine;
* peak GPU memory of the server process (nvidia-smi).

``--engine`` then measures the same load on the engine alone (another process, the same files,
warm-up and settings; each request's sentences submitted as jobs prepared beforehand; TTFA from
submit to the first chunk) and through the ``Synthesizer`` in that process (text preparation
included, no sockets), so the ratios come from one run. The last thing printed is markdown tables.
The code measured is the checkout this is run from (see CODE): run it from main's checkout with
this script for "before". docs/benchmarks.md ("Through the server") has the commands and numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The code measured is the checkout this is run from (the server runs `python -m wyoming_lina` there
# too), else the one beside this script: one bench can measure two checkouts, before and after.
CODE = Path.cwd() if (Path.cwd() / "wyoming_lina" / "__init__.py").is_file() else HERE.parent
sys.path[:0] = [str(HERE), str(CODE)]

from load_clients import TEXTS, one_request, pct, request_text  # noqa: E402

PROMPT_VOICE, STATE_VOICE = "bench-prompt", "bench-state"
PROMPT_TEXT = "this is a five second voice prompt that was recorded in a quiet room at home"
WARM_QUIET_S = 600.0  # no warm-up line for this long after one: taken as its end (the compile is silent for minutes)
SEED = 1  # server and engine sample alike, so the same texts make the same audio
LOG_FORMAT = "%(created).3f %(levelname)s %(name)s: %(message)s"
# server log lines worth a start-up time (the first match of each); "warm" is the last stage of
# the warm-up (engine/warmup.py): the compiled step took over, nothing to prepare, or it stopped
MILESTONES = {
    "listening": r"\blistening at\b",
    "model loaded": r"loaded the model and codec",
    "speaking": r"\bready: speaking\b",
    "plain-step graphs": r"warm-up: .*graphs of the plain step captured",
    "codec graphs": r"warm-up: .*codec graphs captured",
    "warm": r"warm-up: (the compiled step took over|the plain step serves|.*stopped)|warm-up stopped",
}


@dataclasses.dataclass(frozen=True)
class Prepared:
    lina: Path
    codec: Path
    codec_config: Path | None
    tokenizer: Path
    data_dir: Path


# --- models and voices ------------------------------------------------------------------------
def prepare(work: Path, fixtures: Path, tiny: bool) -> Prepared:
    """Model files and the two voices in ``work`` (made once; a later run with the same
    ``--work-dir`` reuses them, and whatever caches the server keeps in the data dir)."""
    import soundfile
    import torch

    from wyoming_lina.voices.store import VoiceStore

    kind = "tiny" if tiny else "full"
    work.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"
    stamp = work / f"prepared-{kind}"
    tokenizer = fixtures / "lina-tiny" / "bpe256.json"
    if tiny:
        lina, codec_path, codec_config = (
            fixtures / "lina-tiny/model.ckpt",
            fixtures / "wavtokenizer-tiny/model.ckpt",
            fixtures / "wavtokenizer-tiny/config.yaml",
        )
    else:
        lina, codec_path, codec_config = work / "lina.safetensors", work / "wavtokenizer.safetensors", None
    files = Prepared(lina, codec_path, codec_config, tokenizer, data_dir)
    if stamp.is_file():
        return files
    started = time.monotonic()
    shutil.rmtree(data_dir, ignore_errors=True)
    if tiny:
        from wyoming_lina.codec import load_codec
        from wyoming_lina.model import load_lina

        model, codec = load_lina(lina), load_codec(codec_config, codec_path)
        state_file = fixtures / "lina-tiny/speaker_state.safetensors"
    else:
        from codec_models import random_codec
        from full_size import random_full_size_lina

        from wyoming_lina.codec import save_codec_safetensors
        from wyoming_lina.model import SpeakerState, save_safetensors

        model = random_full_size_lina("cpu", manifest=fixtures / "lina-tiny/full-size-keys.json")
        save_safetensors(model, lina)
        codec = random_codec()
        save_codec_safetensors(codec, codec_path)
        state_file = work / "speaker_state.safetensors"
        SpeakerState(model.config, rank=1, generator=torch.Generator().manual_seed(1)).save(state_file)
    clip = work / "prompt.wav"
    soundfile.write(clip, prompt_clip(), 24000)
    store = VoiceStore(data_dir, codec=codec, model=model, tokenizer=None)
    store.add(PROMPT_VOICE, audio=clip, text=PROMPT_TEXT, description="bench: 5 s prompt clip")
    store.add(STATE_VOICE, state=state_file, description="bench: speaker state")
    stamp.write_text(f"prepared in {time.monotonic() - started:.1f} s\n")
    print(f"# prepared {kind} models and voices in {work} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return files


def prompt_clip(seconds: float = 5.0, rate: int = 24000):
    """A voiced, syllable-like clip (harmonics of a wandering pitch, 4 Hz envelope, a little noise):
    the codec encodes it like any clip; the random-weight models make no speech of it anyway."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    noise = np.random.default_rng(0).normal(0, 0.02, t.shape)
    return (0.25 * voiced * envelope + noise).astype("float32")


# --- the server process -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, files: Prepared, args, log: Path, max_clients: int):
        self.port = free_port()
        self.log = log
        profile = ["-m", "cProfile", "-o", args.cprofile] if args.cprofile else []
        command = [
            sys.executable, *profile, "-m", "wyoming_lina", "serve",
            "--uri", f"tcp://127.0.0.1:{self.port}",
            "--data-dir", str(files.data_dir),
            "--device", args.device,
            "--lina-checkpoint", str(files.lina),
            "--codec-checkpoint", str(files.codec),
            "--tokenizer", str(files.tokenizer),
            "--voice", PROMPT_VOICE,  # a voice of the data dir: the built-in one is never made
            "--max-sentence-seconds", str(args.sentence_seconds),
            "--seed", str(SEED),  # the same text gives the same audio: equal work in every run
            "--max-connections", str(max(64, 2 * max_clients + 8)),  # a closed connection may still count a moment
            "--log-format", LOG_FORMAT,
        ]  # fmt: skip
        if files.codec_config is not None:
            command += ["--codec-config", str(files.codec_config)]
        if args.max_batch:
            command += ["--max-batch", str(args.max_batch)]
        command += args.server_arg
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        if args.switch_interval:  # an experiment without changing the server: set at interpreter start
            site = log.parent / "site"
            site.mkdir(exist_ok=True)
            (site / "sitecustomize.py").write_text(f"import sys\nsys.setswitchinterval({args.switch_interval!r})\n")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        self.started = time.time()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=CODE)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def milestones(self) -> dict[str, float]:
        """Seconds from the process start to the first log line matching each milestone."""
        found = {}
        for line in self.log.read_text(errors="replace").splitlines():
            stamp, _, rest = line.partition(" ")
            try:
                when = float(stamp)
            except ValueError:
                continue  # the licence notice and other unformatted output
            for name, pattern in MILESTONES.items():
                if name not in found and re.search(pattern, rest):
                    found[name] = when - self.started
            if "warm-up" in rest:
                found["last warm-up line"] = when - self.started
        return found

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


async def measure_startup(
    server: ServerProcess, voice: str, timeout: float, probe_every: float = 0.0
) -> dict[str, float | str | None]:
    """Poll the port; once it listens, ask ``describe`` until answered, then send one request at
    once (during warm-up if the server serves before it is warm), and with ``probe_every`` one more
    every that many seconds until the warm-up line (the worst first audio over the whole warm-up)."""
    from wyoming.event import async_read_event, async_write_event
    from wyoming.info import Describe

    out: dict[str, float | str | None] = {}
    deadline = time.monotonic() + timeout

    def since_start() -> float:
        return time.time() - server.started

    def check_alive() -> None:
        if server.proc.poll() is not None:
            raise SystemExit(f"the server exited with {server.proc.returncode} during start-up:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            server.stop()
            raise SystemExit(f"the server did not start within {timeout:.0f} s:\n{server.log_tail()}")

    while True:
        check_alive()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            break
        except OSError:
            await asyncio.sleep(0.02)
    out["port listening"] = since_start()
    try:
        await async_write_event(Describe().event(), writer)
        while True:
            event = await asyncio.wait_for(async_read_event(reader), max(1.0, deadline - time.monotonic()))
            if event is None or event.type == "info":
                break
        out["describe answered"] = since_start() if event is not None else None
    finally:
        writer.close()
    probe = await one_request("127.0.0.1", server.port, TEXTS[0], voice)
    out["first audio (request at listening)"] = (
        probe["start"] + probe["ttfa"] - server.started if probe["ttfa"] else None
    )
    out["that request done"] = probe["end"] - server.started
    out["probe error"] = probe["error"]
    out["TTFA during warm-up"] = None
    probes: list[tuple[float, float | None]] = []  # (sent, seconds after start; TTFA)
    if "warm" not in server.milestones():  # a request while the fast paths are still being prepared
        during = await one_request("127.0.0.1", server.port, TEXTS[1], voice)
        out["TTFA during warm-up"] = during["ttfa"]
        out["probe error"] = out["probe error"] or during["error"]
        probes.append((during["start"] - server.started, during["ttfa"]))
    next_probe = time.monotonic() + probe_every if probe_every else math.inf
    while "warm" not in (found := server.milestones()):
        if time.monotonic() >= next_probe:  # one request every probe_every seconds until warm
            during = await one_request("127.0.0.1", server.port, TEXTS[len(probes) % len(TEXTS)], voice)
            probes.append((during["start"] - server.started, during["ttfa"]))
            out["probe error"] = out["probe error"] or during["error"]
            next_probe = time.monotonic() + probe_every
            continue
        # without a compiler (no Triton) the warm-up ends after its last graphs with no line of its own
        quiet = time.time() - server.started - found.get("last warm-up line", math.inf)
        if server.proc.poll() is not None or time.monotonic() > deadline or quiet > WARM_QUIET_S:
            print(
                f"# no end of the warm-up in the server's log ({quiet:.0f} s since its last line): measuring now",
                file=sys.stderr,
            )
            break
        await asyncio.sleep(0.1)
    if probes:
        ttfas = [t for _, t in probes if t is not None]
        worst = max(probes, key=lambda p: p[1] if p[1] is not None else math.inf)
        out["warm-up probes"] = len(probes)
        out["warm-up probe TTFA p50"] = pct(ttfas, 0.5)
        out["warm-up probe TTFA max"] = worst[1]
        out["warm-up probe worst sent at"] = worst[0]
        out["warm-up probes (sent s, TTFA ms)"] = [(round(a, 1), round(1000 * b) if b else None) for a, b in probes]
    return out


class GpuMemory:
    """Peak memory of one process on the GPU (nvidia-smi every 0.25 s, in a thread); if the
    process is not listed (another PID namespace), the device's used memory above its level at
    start is kept instead."""

    def __init__(self):
        self.peak_process = 0.0
        self.peak_device = 0.0
        self.baseline = self._device_used() or 0.0
        self.pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _query(what: str) -> list[list[str]]:
        try:
            text = subprocess.run(
                ["nvidia-smi", f"--query-{what}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [[cell.strip() for cell in line.split(",")] for line in text.splitlines() if line.strip()]

    def _device_used(self) -> float | None:
        rows = self._query("gpu=memory.used")
        return float(rows[0][0]) if rows and rows[0][0].replace(".", "").isdigit() else None

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for pid, used in self._query("compute-apps=pid,used_memory"):
                if self.pid is not None and pid == str(self.pid) and used.isdigit():
                    self.peak_process = max(self.peak_process, float(used))
            used = self._device_used()
            if used is not None:
                self.peak_device = max(self.peak_device, used - self.baseline)

    def stop(self) -> str:
        self._stop.set()
        self._thread.join(5)
        if self.peak_process:
            return f"{self.peak_process / 1024:.2f} GiB (nvidia-smi, the server process)"
        return f"{self.peak_device / 1024:.2f} GiB (nvidia-smi, device used above its level before the server)"


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of ``pid`` so far (Linux; {} elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return out


def cpu_split(pid: int, before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU seconds spent between two ``thread_cpu`` readings: the main thread (the event loop),
    the busiest other thread (the engine loop; Python does not name OS threads) and the rest."""
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    loop = used.pop(pid, 0.0)
    engine_tid = max(used, key=used.get, default=None)
    engine = used.pop(engine_tid, 0.0) if engine_tid is not None else 0.0
    return {"event loop cpu s": loop, "engine cpu s": engine, "other threads cpu s": sum(used.values())}


# --- loads ---------------------------------------------------------------------------------------
def requests_per_client(clients: int, args) -> int:
    return max(args.rounds, math.ceil(args.min_requests / clients))


def run_load(port: int, clients: int, args, voice: str) -> list[dict]:
    """``clients`` clients over ``--client-procs`` processes started together."""
    procs_n = args.client_procs or (1 if args.device == "cpu" else max(1, math.ceil(clients / 16)))
    procs_n = min(procs_n, clients)
    start_at = time.time() + 1.0 + 0.2 * procs_n  # every process imported and waiting
    procs, offset = [], 0
    for i in range(procs_n):
        n = clients // procs_n + (1 if i < clients % procs_n else 0)
        command = [
            sys.executable, str(HERE / "load_clients.py"), "--port", str(port), "--clients", str(n),
            "--requests", str(requests_per_client(clients, args)), "--voice", voice,
            "--start-at", str(start_at), "--offset", str(offset), "--sentences", str(args.sentences),
        ]  # fmt: skip
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        offset += n
    records = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a client process failed ({proc.returncode})")
        records += json.loads(out)["records"]
    return records


def summarize(records: list[dict], sample_rate: int = 24000) -> dict:
    ok = [r for r in records if r["error"] is None]
    ttfa = [r["ttfa"] for r in ok if r["ttfa"] is not None]
    begin = min(r["start"] - (r.get("connect") or 0) for r in records)
    wall = max(r["end"] for r in records) - begin
    audio = sum(r["samples"] for r in ok) / sample_rate
    errors = sorted({r["error"] for r in records if r["error"]})
    # each request's wall time over its audio's length, as a client measures it (not the log's)
    rtf = [(r["end"] - r["start"]) / (r["samples"] / sample_rate) for r in ok if r["samples"]]
    return {
        "requests": len(records),
        "errors": len(records) - len(ok),
        "error kinds": errors[:3],
        "ttfa p50": pct(ttfa, 0.5),
        "ttfa p95": pct(ttfa, 0.95),
        "audio s": audio,
        "wall s": wall,
        "x real time": audio / wall if wall > 0 else 0.0,
        "request rtf p50": pct(rtf, 0.5),
        "request rtf max": max(rtf, default=None),
    }


# --- the engine alone (its own process) ------------------------------------------------------------
def engine_role(args, files: Prepared) -> dict:
    """The same load with no server: the engine built, warmed and set as ``serve`` does."""
    import gc

    import torch

    from wyoming_lina.engine import SamplingOptions
    from wyoming_lina.engine.synthesizer import SynthesisSettings, Synthesizer
    from wyoming_lina.engine.warmup import WarmUp
    from wyoming_lina.server.download import ModelFiles
    from wyoming_lina.server.runtime import choose_dtype, load_runtime, max_frames_for
    from wyoming_lina.text import SentenceChunker
    from wyoming_lina.voices.store import VoiceStore

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    limits = {"max_batch": args.max_batch} if args.max_batch else {}
    model_files = ModelFiles(files.lina, files.codec, files.codec_config, files.tokenizer)
    runtime = load_runtime(model_files, args.device, choose_dtype("auto", args.device), **limits)
    store = VoiceStore(files.data_dir, codec=runtime.codec, model=runtime.model, tokenizer=runtime.tokenizer)
    settings = SynthesisSettings(
        default_voice=PROMPT_VOICE,
        max_frames=max_frames_for(args.sentence_seconds),
        sampling=SamplingOptions(seed=SEED),
    )
    synth = Synthesizer(runtime.engine, runtime.tokenizer, store, settings)
    engine = runtime.engine
    voice = store.get(args.voice_name)
    silence = int(settings.sentence_silence * synth.sample_rate)
    jobs = {}
    for text in {request_text(i, args.sentences) for i in range(len(TEXTS))}:  # (what the clients send)
        chunker = SentenceChunker(max_chars=settings.max_sentence_chars)
        sentences = chunker.add(text) + chunker.finish()
        jobs[text] = [job for s in sentences for job in synth.jobs_for(s, voice, settings.sampling)]

    async def engine_request(text: str) -> dict:
        owner = object()  # one client's request, for the engine's fair admission
        record = {"start": time.time(), "ttfa": None, "samples": 0, "error": None}
        t0 = time.perf_counter()
        handles = [engine.submit(dataclasses.replace(job, owner=owner)) for job in jobs[text]]
        for handle in handles:
            async for chunk in handle:
                if record["ttfa"] is None:
                    record["ttfa"] = time.perf_counter() - t0
                record["samples"] += len(chunk)
        record["samples"] += silence * (len(handles) - 1)
        record["end"] = time.time()
        return record

    async def synth_request(text: str) -> dict:
        record = {"start": time.time(), "ttfa": None, "samples": 0, "error": None}
        t0 = time.perf_counter()
        async for chunk in synth.synthesize(text, args.voice_name):
            if record["ttfa"] is None:
                record["ttfa"] = time.perf_counter() - t0
            record["samples"] += len(chunk)
        record["end"] = time.time()
        return record

    async def load(request, clients: int) -> list[dict]:
        n = requests_per_client(clients, args)

        async def client(i: int) -> list[dict]:
            return [await request(request_text(i + r * 3, args.sentences)) for r in range(n)]

        return [rec for per_client in await asyncio.gather(*(client(i) for i in range(clients))) for rec in per_client]

    async def run() -> dict:
        started = time.monotonic()
        warm = WarmUp(engine).start()  # as serve does, then wait until it is done
        await asyncio.to_thread(warm.done.wait)
        warm_s = time.monotonic() - started
        gc.freeze()  # as serve does after its warm-up
        await load(engine_request, 1)  # one unmeasured request on the warm engine
        results = {"warm-up s": warm_s}
        for clients in args.loads:
            results[f"engine {clients}"] = summarize(await load(engine_request, clients))
            results[f"synthesizer {clients}"] = summarize(await load(synth_request, clients))
        return results

    engine.start()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    try:
        results = asyncio.run(run())
    finally:
        engine.stop()
    if args.device.startswith("cuda"):
        results["peak GPU GiB"] = torch.cuda.max_memory_allocated() / 2**30
    return results


def text_path(files: Prepared, voice_name: str, repeat: int = 400) -> str:
    """CPU microseconds per request of what the event loop does with a request's text (split,
    normalise, tokenise, submit: ``SynthesisStream.add_text`` + ``finish``) for the bench texts,
    the engine not running (its queue takes the jobs), on this machine's CPU."""
    from wyoming_lina.engine import SamplingOptions
    from wyoming_lina.engine.synthesizer import SynthesisSettings, SynthesisStream, Synthesizer
    from wyoming_lina.server.download import ModelFiles
    from wyoming_lina.server.runtime import load_runtime
    from wyoming_lina.voices.store import VoiceStore

    runtime = load_runtime(
        ModelFiles(files.lina, files.codec, files.codec_config, files.tokenizer), "cpu", "float32", max_queue=10**7
    )
    store = VoiceStore(files.data_dir, codec=runtime.codec, model=runtime.model, tokenizer=runtime.tokenizer)
    synth = Synthesizer(
        runtime.engine, runtime.tokenizer, store, SynthesisSettings(sampling=SamplingOptions(seed=SEED))
    )
    voice = store.get(voice_name)

    async def run(n: int) -> float:
        started = time.thread_time()  # CPU time of this thread: other processes on the machine do not count
        for i in range(n):
            stream = SynthesisStream(synth, voice, synth.settings.sampling, owner=object())
            stream.add_text(TEXTS[i % len(TEXTS)])
            stream.finish()
            stream.cancel()
        return (time.thread_time() - started) / n * 1e6

    asyncio.run(run(50))
    runs = [asyncio.run(run(repeat)) for _ in range(3)]
    return (
        f"text path per request (split, normalise, tokenise, submit; {voice_name}): "
        + ", ".join(f"{us:.0f}" for us in runs)
        + " us"
    )


# --- orchestration -------------------------------------------------------------------------------
def times(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f}"


def ratio_pair(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a:.2f}, {b:.2f}"


def seconds(value) -> str:
    return "-" if value is None else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def tables(startup: dict, milestones: dict, loads: dict, engine: dict | None, memory: str | None, args) -> list[str]:
    setting = f"; switch interval {args.switch_interval} s" if args.switch_interval else ""
    models = "tiny" if args.tiny else "full-size"
    out = ["", f"## Server start-up (seconds after the process started; {args.device}, {models} models{setting})", ""]
    out += [
        "| port listening | describe answered | model loaded | speaking | first audio, request sent at listening | TTFA of a request during warm-up (ms) | warm |"
    ]
    out += ["|---|---|---|---|---|---|---|"]
    out += [
        f"| {seconds(startup['port listening'])} | {seconds(startup['describe answered'])} | "
        f"{seconds(milestones.get('model loaded'))} | {seconds(milestones.get('speaking'))} | "
        f"{seconds(startup['first audio (request at listening)'])} | {ms(startup['TTFA during warm-up'])} | "
        f"{seconds(milestones.get('warm'))} |"
    ]
    if startup.get("warm-up probes"):
        out += [
            "",
            f"Requests during the warm-up: {startup['warm-up probes']}, time to first audio p50 "
            f"{ms(startup['warm-up probe TTFA p50'])} ms, worst {ms(startup['warm-up probe TTFA max'])} ms "
            f"(sent {seconds(startup['warm-up probe worst sent at'])} s after start).",
        ]
    if startup.get("probe error"):
        out += ["", f"A request sent during start-up failed: {startup['probe error']}"]
    texts = "two-sentence texts" if args.sentences == 2 else "one sentence per request"
    out += ["", f"## Load ({args.voice} voice, a new connection per request, {texts})", ""]
    head = (
        "| clients | requests (errors) | TTFA p50 / p95 ms | x real time | request wall / audio p50, max "
        "| event loop CPU ms per request | read -> queued p50 / p95 ms |"
    )
    if engine:
        head += " engine TTFA p50 / p95 ms | engine x real time | TTFA p50 server / engine | aggregate server / engine | in-process synthesizer TTFA p50 ms, x real time |"
    out += [head, "|" + "---|" * head.count(" |")]
    for clients in args.loads:
        s = loads[clients]
        loop_ms = f"{1000 * s['event loop cpu s'] / s['requests']:.1f}" if "event loop cpu s" in s else "-"
        q50, q95 = s.get("queued p50 ms"), s.get("queued p95 ms")
        queued = f"{q50:.1f} / {q95:.1f}" if q50 is not None else "-"
        row = (
            f"| {clients} | {s['requests']} ({s['errors']}) | {ms(s['ttfa p50'])} / {ms(s['ttfa p95'])} | "
            f"{times(s['x real time'])} | {ratio_pair(s['request rtf p50'], s['request rtf max'])} | {loop_ms} | {queued} |"
        )
        if engine:
            e, y = engine[f"engine {clients}"], engine[f"synthesizer {clients}"]
            ratio = f"{s['ttfa p50'] / e['ttfa p50']:.2f}" if s["ttfa p50"] and e["ttfa p50"] else "-"
            agg = f"{100 * s['x real time'] / e['x real time']:.0f}%" if e["x real time"] else "-"
            row += (
                f" {ms(e['ttfa p50'])} / {ms(e['ttfa p95'])} | {times(e['x real time'])} | {ratio} | {agg} | "
                f"{ms(y['ttfa p50'])}, {times(y['x real time'])} |"
            )
        out.append(row)
    errors = {kind for s in loads.values() for kind in s["error kinds"]}
    if errors:
        out += ["", "Errors seen: " + "; ".join(sorted(errors))]
    if memory:
        peak = (
            f"; engine process (PyTorch, allocated): {engine['peak GPU GiB']:.2f} GiB"
            if engine and "peak GPU GiB" in engine
            else ""
        )
        out += ["", f"Peak GPU memory, server: {memory}{peak}"]
    return out


def py_spy(pid: int, out: str, gil: bool):
    """py-spy recording the server (stopped with SIGINT; it then writes ``out``: .svg a flame graph,
    .json speedscope, anything else collapsed stacks); ``gil``: only samples holding the GIL."""
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(Path(out).suffix, "raw")
    exe = (
        shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        or "py-spy"
    )
    command = [exe, "record", "-p", str(pid), "-o", out, "-f", fmt, "-r", "200", "--threads"] + (
        ["--gil"] if gil else ["--idle"]
    )
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description="Time to first audio and throughput through the real server process")
    parser.add_argument("--fixtures", type=Path, default=HERE.parent.parent / "shared/fixtures")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--tiny", action="store_true", help="the fixture models (CPU development) instead of full-size random weights"
    )
    parser.add_argument("--loads", default="1,8,32,64", help="concurrent clients, comma-separated")
    parser.add_argument("--rounds", type=int, default=4, help="requests per client, one after another")
    parser.add_argument("--min-requests", type=int, default=16, help="at least this many requests per load")
    parser.add_argument("--voice", choices=("prompt", "state"), default="prompt")
    parser.add_argument(
        "--sentences", type=int, choices=(1, 2), default=2, help="two-sentence texts, or only their first sentence"
    )
    parser.add_argument("--max-batch", type=int, help="--max-batch of the server and the engine")
    parser.add_argument(
        "--sentence-seconds", type=float, default=60.0, help="--max-sentence-seconds (the server's default: 60)"
    )
    parser.add_argument(
        "--engine", action="store_true", help="also the same load on the engine alone (and the in-process synthesizer)"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="keep models, voices and the server's caches here (default: a temporary dir)"
    )
    parser.add_argument(
        "--client-procs", type=int, help="client processes per load (default: 1 on CPU, one per 16 clients on CUDA)"
    )
    parser.add_argument("--threads", type=int, help="torch threads of the server/engine (default: 1 on CPU)")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra argument for serve (repeat; --server-arg=--opt=value)"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="the server's sys.setswitchinterval (seconds; Python's default 0.005), for an A/B run",
    )
    parser.add_argument(
        "--py-spy", metavar="FILE", help="record the server with py-spy during the largest load (.svg or .json)"
    )
    parser.add_argument("--py-spy-gil", action="store_true", help="py-spy: only samples that hold the GIL")
    parser.add_argument(
        "--py-spy-startup",
        metavar="FILE",
        help="record the server with py-spy from its start to the end of its warm-up",
    )
    parser.add_argument("--py-spy-load", type=int, help="py-spy: record at this load (default: the largest)")
    parser.add_argument(
        "--text-path", action="store_true", help="only time the text work of a request in this process (no server)"
    )
    parser.add_argument("--records", metavar="PREFIX", help="write every request's record to PREFIX.<clients>.json")
    parser.add_argument(
        "--cprofile", metavar="FILE", help="run the server under cProfile (its main thread: the event loop)"
    )
    parser.add_argument("--startup-timeout", type=float, default=900.0)
    parser.add_argument(
        "--warmup-probe-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="during the warm-up, one request every SECONDS (their worst time to first audio)",
    )
    parser.add_argument("--role", choices=("engine",), help=argparse.SUPPRESS)
    parser.add_argument("--prepared", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    args.loads = [int(n) for n in args.loads.split(",")]
    args.voice_name = PROMPT_VOICE if args.voice == "prompt" else STATE_VOICE

    if args.role == "engine":
        prepared = json.loads(args.prepared)
        files = Prepared(**{k: Path(v) if v else None for k, v in prepared.items()})
        print(json.dumps(engine_role(args, files)))
        return

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-server-"))
    try:
        files = prepare(work, args.fixtures, args.tiny)
        if args.text_path:
            print(text_path(files, args.voice_name))
            return
        memory = GpuMemory() if args.device.startswith("cuda") and shutil.which("nvidia-smi") else None
        server = ServerProcess(files, args, work / "server.log", max(args.loads))
        if memory is not None:
            memory.pid = server.proc.pid
        loads = {}
        try:
            spy = py_spy(server.proc.pid, args.py_spy_startup, False) if args.py_spy_startup else None
            try:
                startup = asyncio.run(
                    measure_startup(server, args.voice_name, args.startup_timeout, args.warmup_probe_every)
                )
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(120)
            milestones = server.milestones()
            print(f"# start-up: {json.dumps(startup)} log: {json.dumps(milestones)}", file=sys.stderr)
            for clients in args.loads:
                spy_at = args.py_spy_load or max(args.loads)
                spy = (
                    py_spy(server.proc.pid, args.py_spy, args.py_spy_gil) if args.py_spy and clients == spy_at else None
                )
                try:
                    before = thread_cpu(server.proc.pid)
                    records = run_load(server.port, clients, args, args.voice_name)
                    if args.records:
                        Path(f"{args.records}.{clients}.json").write_text(json.dumps(records))
                    loads[clients] = summarize(records)
                    queued = [
                        float(v)
                        for v in re.findall(
                            r"sentences queued after ([\d.]+) ms", server.log.read_text(errors="replace")
                        )
                    ]
                    queued = queued[-len(records) :]  # this load's requests (one line each)
                    loads[clients].update({"queued p50 ms": pct(queued, 0.5), "queued p95 ms": pct(queued, 0.95)})
                    loads[clients].update(cpu_split(server.proc.pid, before, thread_cpu(server.proc.pid)))
                finally:
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(60)
                print(f"# server, {clients} clients: {json.dumps(loads[clients])}", file=sys.stderr)
        finally:
            milestones = server.milestones()  # (again: a stage may have come during the loads)
            code = server.stop()
            gpu = memory.stop() if memory is not None else None
        if code not in (0, None):
            print(f"# the server exited with {code}:\n{server.log_tail()}", file=sys.stderr)
        engine = None
        if args.engine:
            prepared = json.dumps({k: str(v) if v else None for k, v in dataclasses.asdict(files).items()})
            command = [sys.executable, __file__, "--role", "engine", "--prepared", prepared] + sys.argv[1:]
            from wyoming_lina.server.runtime import cache_environment

            env = dict(os.environ, **cache_environment(files.data_dir, os.environ))  # the server's compile caches
            if args.threads:
                env["OMP_NUM_THREADS"] = str(args.threads)
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(f"the engine process failed ({done.returncode})")
            engine = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"# engine: {json.dumps(engine)}", file=sys.stderr)
        print("\n".join(tables(startup, milestones, loads, engine, gpu, args)))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
