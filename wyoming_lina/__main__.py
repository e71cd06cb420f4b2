"""``wyoming-lina``: serve, download, speak, voice. Only wiring: the work lives in the packages."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import threading
from functools import partial
from pathlib import Path

from .errors import LinaError, NoAudioError, os_error_line
from .server.app import ListenError
from .server.discovery import DiscoveryError
from .server.options import RuntimeConfigError, parse_args, usable_cores

_LOGGER = logging.getLogger("wyoming_lina")


class _Stopped(Exception):
    """SIGTERM before the server was ready (loading, warm-up): a clean stop."""


def _stop_on_sigterm(signum, frame):  # noqa: ARG001
    raise _Stopped()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format=args.log_format, stream=sys.stderr)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return {"serve": _serve, "download": _download, "speak": _speak}.get(args.command, _voice)(args)
    except (LinaError, RuntimeConfigError, DiscoveryError, ListenError) as err:  # fixable by the user: no traceback
        _LOGGER.error("%s", err)
        return 1
    except OSError as err:  # a full disk, a read-only or vanished folder: what failed and where, in one line
        _LOGGER.error("%s", os_error_line(err))
        return 1
    except (_Stopped, KeyboardInterrupt):
        _LOGGER.info("stopped")
        return 0


# --- commands --------------------------------------------------------------------------------
def _serve(args) -> int:
    """Listen at once (describe is answered from the data dir), load the model in a thread, speak
    as soon as it is loaded, and prepare the fast paths while speaking (engine/warmup.py)."""
    from wyoming.server import AsyncServer

    from .server.app import check_listen, serve
    from .server.handler import HandlerSettings, LinaEventHandler
    from .server.healthcheck import publish_uri
    from .server.info import InfoBuilder
    from .server.metrics import ServerMetrics, engine_reader
    from .server.runtime import cache_environment
    from .server.service import Service
    from .server.tracking import ConnectionCounter, RequestTracker

    advertiser = _advertiser(args)  # decided before the slow part: a bad address fails at once
    check_listen(args.uri)  # a port in use, too
    store = _preflight(args)  # a mistyped --voice, an unwritable data dir: at once, too
    os.environ.update(cache_environment(args.data_dir, os.environ))  # before torch compiles anything
    service, loaded = Service(), {}
    metrics = ServerMetrics(lambda: engine_reader(loaded["runtime"].engine)() if "runtime" in loaded else {})

    async def load() -> None:
        """Model, default voice, engine (in a thread: the event loop goes on answering), then the
        studio and the warm-up; runs as long as the server does."""
        from .server.runtime import warm_up

        runtime, _, synthesizer = await _in_thread(_build, args, store)
        loaded["runtime"] = runtime
        warming = warm_up(runtime.engine, service.state)
        await _in_thread(warming.prepare_cpu)  # (a CPU's speed and streaming windows, before traffic: ~2 s)
        runtime.engine.start()
        service.provide(synthesizer)
        warming.start()
        if args.http_port:
            loaded["studio"] = _studio(args, runtime.device, store, synthesizer, metrics, service)
            await loaded["studio"].start()
        _LOGGER.info(
            "ready: speaking after %.1f s; preparing the fast paths meanwhile", service.state.as_dict()["seconds"]
        )
        gc.freeze()  # the loaded model's objects are permanent: keep them out of every GC pass
        await asyncio.Event().wait()

    tracker = RequestTracker()
    factory = partial(
        LinaEventHandler,
        info=InfoBuilder(store.list, streaming=not args.no_streaming),
        service=service,
        settings=HandlerSettings(
            samples_per_chunk=args.samples_per_chunk,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
            stream_timeout=args.stream_timeout,
            frame_timeout=args.frame_timeout,
        ),
        tracker=tracker,
        connections=ConnectionCounter(),
        metrics=metrics,
    )

    async def started() -> None:
        _LOGGER.info("listening at %s (loading the model)", args.uri)
        publish_uri(args.uri)  # where the container's health check asks
        if advertiser:
            await advertiser.start()

    async def run() -> None:
        try:
            await serve(
                AsyncServer.from_uri(args.uri),
                factory,
                tracker,
                shutdown_timeout=args.shutdown_timeout,
                on_started=started,
                on_stopping=advertiser.close if advertiser else None,
                alongside=load,
            )
        finally:
            if "studio" in loaded:
                await loaded["studio"].stop(args.shutdown_timeout)

    try:
        asyncio.run(run())
    finally:
        if "runtime" in loaded:
            loaded["runtime"].engine.stop()
    _LOGGER.info("stopped")
    return 0


def _in_thread(fn, *args) -> asyncio.Future:
    """``fn(*args)`` on a daemon thread (a SIGTERM while it runs does not wait for it), awaited."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(setter, value) -> None:
        if not future.done():
            setter(value)

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as err:  # noqa: BLE001 (handed to the awaiting task)
            outcome = (future.set_exception, err)
        else:
            outcome = (future.set_result, result)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: the server stopped meanwhile
            pass

    threading.Thread(target=work, name="lina-load", daemon=True).start()
    return future


def _download(args) -> int:
    from .server.download import ModelDownloader

    downloader = ModelDownloader(args.data_dir, keep_downloads=args.keep_downloads)
    downloader.ensure()
    for path in (downloader.lina_path, downloader.codec_path, downloader.tokenizer_path):
        print(path)
    return 0


def _speak(args) -> int:
    from .server.speak import check_request, synthesize_all, write_wav

    check_request(args.text, args.output)  # before the slow part: a bad request fails at once
    runtime, _store, synthesizer = _build(args, _preflight(args))
    runtime.engine.start()
    try:
        samples = asyncio.run(synthesize_all(synthesizer, args.text, args.voice))
    finally:
        runtime.engine.stop()
    if not len(samples):  # never a silent WAV that looks like success
        raise NoAudioError(f"no audio: nothing in {args.text!r} can be spoken by the model")
    write_wav(args.output, samples, synthesizer.sample_rate)
    _LOGGER.info("wrote %.2f s of audio to %s", len(samples) / synthesizer.sample_rate, args.output)
    return 0


def _voice(args) -> int:
    from .voices.cli import run  # model files default to the data dir's, as for the server

    return int(run(args, make_transcriber=_make_transcriber) or 0)


def _make_transcriber(uri: str):
    from .server.asr import WyomingTranscriber

    return WyomingTranscriber(uri).transcribe_sync


# --- shared wiring ---------------------------------------------------------------------------
def _preflight(args):
    """The voice store (it lists voices without the model) and the checks that need no model:
    a mistyped default voice, an unwritable data dir for the built-in voice, fail at once."""
    from .data_dir import ensure_writable
    from .voices.default import DEFAULT_VOICE
    from .voices.store import VoiceStore

    store = VoiceStore(args.data_dir, config_path=args.voices_file)
    if args.voice:
        if args.voice not in store:
            store.get(args.voice)  # raises UnknownVoiceError naming the voices there are
    elif DEFAULT_VOICE not in store:  # the built-in voice will be written: say now if it cannot be
        ensure_writable(args.data_dir)
    return store


def _build(args, store):
    """Model files -> device -> model, codec, engine -> voices (``store``) -> synthesizer."""
    import torch

    from .engine import SamplingOptions
    from .engine.synthesizer import SynthesisSettings, Synthesizer
    from .server.download import resolve_model_files
    from .server.runtime import LICENCE_NOTICE, choose_device, choose_dtype, load_runtime, max_frames_for
    from .voices.default import ensure_default_voice
    from .voices.preferences import DefaultingVoices, VoicePreferences

    device = choose_device(args.device, cuda_available=torch.cuda.is_available(), cuda_count=torch.cuda.device_count())
    dtype = choose_dtype(args.dtype, device)
    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)
    if device == "cpu":
        _LOGGER.warning(
            "RUNNING ON CPU: no CUDA GPU is in use (%d threads, %s decode step). Its speed is measured "
            "once the model is loaded and logged (\"CPU speed\"): whether it keeps up with real time "
            "depends on this machine; an NVIDIA GPU is many times faster (README: GPU and Docker).",
            threads, "quantized" if args.cpu_quant == "q8" else "float32",
        )  # fmt: skip
    print(LICENCE_NOTICE, file=sys.stderr, flush=True)
    files = resolve_model_files(
        args.data_dir,
        lina=args.lina_checkpoint,
        codec_checkpoint=args.codec_checkpoint,
        codec_config=args.codec_config,
        tokenizer=args.tokenizer,
        trust_checkpoints=args.trust_checkpoints,
    )
    limits = {key: getattr(args, key) for key in ("max_batch", "max_queue") if hasattr(args, key)}
    limits["cpu_quant"] = args.cpu_quant
    limits["cpu_step_cache"] = str(Path(args.data_dir) / ".cache" / "cpu-step")  # (the quantized CPU step)
    runtime = load_runtime(files, device, dtype, **limits)
    store.attach(codec=runtime.codec, model=runtime.model, tokenizer=runtime.tokenizer)
    # The built-in voice is made once (a few seconds of generation) unless --voice chooses another.
    # Requests without a voice: --voice > the studio's choice (settings.yaml) > the built-in voice.
    builtin = args.voice or ensure_default_voice(store, runtime.model, runtime.codec, runtime.tokenizer).name
    voices = DefaultingVoices(store, VoicePreferences(args.data_dir), fixed=args.voice, fallback=builtin)
    settings = SynthesisSettings(
        sampling=SamplingOptions(seed=args.seed),
        default_voice=None,  # DefaultingVoices decides
        sentence_silence=args.sentence_silence,
        max_text_chars=args.max_text_chars,
        max_frames=max_frames_for(args.max_sentence_seconds),
        deadline=args.deadline,
        first_audio_alone=runtime.device == "cpu",  # (engine/text_stream.py)
    )
    synthesizer = Synthesizer(runtime.engine, runtime.tokenizer, voices, settings)
    for info in store.warm():  # load every voice now (prompt clips encoded once), log the broken ones
        _LOGGER.info(
            "voice %s (%s, %s)%s", info.name, info.kind, "/".join(info.languages), "" if info.installed else " BROKEN"
        )
    voice = synthesizer.resolve_voice(None)  # a broken default voice fails here, at start-up
    _LOGGER.info("default voice: %s", voice.name)
    return runtime, store, synthesizer


def _studio(args, device: str, store, synthesizer, metrics, service):
    """The voice studio (--http-port): page, JSON API, tuning jobs in `voice tune` child processes."""
    from .server.asr import WyomingTranscriber
    from .studio.api import StudioContext
    from .studio.app import StudioServer, studio_host
    from .studio.jobs import TuningCommand, TuningJobs

    model_args = ["--device", device]
    for option in ("lina_checkpoint", "codec_checkpoint", "codec_config", "tokenizer", "voices_file"):
        if getattr(args, option, None) is not None:
            model_args += [f"--{option.replace('_', '-')}", str(Path(getattr(args, option)).resolve())]
    data_dir = Path(args.data_dir).resolve()
    command = TuningCommand(data_dir, model_args, args.asr_uri)
    ctx = StudioContext(
        data_dir=data_dir,
        store=store,
        voices=synthesizer.voices,
        synthesizer=synthesizer,
        transcriber=WyomingTranscriber(args.asr_uri) if args.asr_uri else None,
        jobs=TuningJobs(data_dir / "studio" / "jobs", command, store),
        metrics=metrics,
        token=args.http_token,
        max_speaking=args.max_connections,  # the HTTP door is held to the Wyoming door's limit
        ready=True,  # made once the model is loaded
        serving=service.state,
    )
    return StudioServer(ctx, studio_host(args.uri), args.http_port)


def _advertiser(args):
    if args.zeroconf is None:
        return None
    from .server.discovery import (
        ZeroconfAdvertiser,
        choose_advertised_host,
        detect_ipv4,
        listen_address_warning,
        port_of,
    )

    host = choose_advertised_host(args.zeroconf_host, [] if args.zeroconf_host else detect_ipv4())
    if warning := listen_address_warning(args.uri, host):
        _LOGGER.warning("%s", warning)
    return ZeroconfAdvertiser(args.zeroconf, host, port_of(args.uri))


if __name__ == "__main__":
    sys.exit(main())
