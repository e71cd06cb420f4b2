"""Command line and YAML configuration: one parser, one source of defaults.

Every option of ``serve`` (and the options ``speak``/``download`` share with it) may also be
set in a YAML file (``--config``, default ``config/lina.yaml`` when it exists). Precedence:
command line > YAML file > the defaults declared here. The YAML file carries no defaults of
its own (the shipped one only has comments), so nothing is configured in two places.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..data_dir import DATA_DIR_ENV, default_data_dir
from ..defaults import CPU_QUANT, MAX_BATCH, MAX_QUEUE
from ..safe_yaml import YamlError, load_yaml

DEFAULT_CONFIG = Path("config/lina.yaml")
DEFAULT_URI = "tcp://0.0.0.0:10200"
DEFAULT_ZEROCONF_NAME = "lina"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
VOICE_CONFIG_KEYS = ("data_dir", "voices_file", "asr_uri")


def _path(value: str) -> Path:
    return Path(value).expanduser()


def _int_between(low: int, high: int):
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {number}")
        return number

    parse.__name__ = "integer"  # argparse names the type in its message
    return parse


def _seconds(low: float, high: float, *, low_allowed: bool = True):
    """A finite number of seconds in [low, high] (or (low, high])."""

    def parse(value: str) -> float:
        number = float(value)
        above = number >= low if low_allowed else number > low
        if not (above and number <= high):  # also refuses NaN and infinities
            lower = f"at least {low:g}" if low_allowed else f"more than {low:g}"
            raise argparse.ArgumentTypeError(f"must be {lower} and at most {high:g} seconds, got {value}")
        return number

    parse.__name__ = "seconds"
    return parse


def _port(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {number}")
    return number


class Options:
    """A command's parser (or one of its groups) that remembers the options added to it, as
    ``add_argument`` returns them: the YAML reader converts values exactly as the command line
    does, and argparse keeps its own list of them private."""

    def __init__(self, target, actions: dict[str, argparse.Action]):
        self.target = target
        self.actions = actions

    def add_argument(self, *flags, **kwargs) -> argparse.Action:
        action = self.target.add_argument(*flags, **kwargs)
        if action.option_strings:
            self.actions[action.dest] = action
        return action

    def add_argument_group(self, title: str) -> Options:
        return Options(self.target.add_argument_group(title), self.actions)


@dataclass
class CommandLine:
    """The whole command line: the parser, each command's parser, and each command's options."""

    parser: argparse.ArgumentParser
    commands: dict[str, argparse.ArgumentParser] = field(default_factory=dict)
    options: dict[str, dict[str, argparse.Action]] = field(default_factory=dict)

    def command(self, subparsers, name: str, **kwargs) -> Options:
        self.commands[name] = subparsers.add_parser(name, **kwargs)
        return Options(self.commands[name], self.options.setdefault(name, {}))


# --- option groups shared by subcommands ----------------------------------------------------
def _common(parser: Options) -> None:
    parser.add_argument(
        "--config", type=_path, help=f"YAML file with option values (default: {DEFAULT_CONFIG} if present)"
    )
    parser.add_argument(
        "--data-dir",
        type=_path,
        default=default_data_dir(),
        help=f"models and voices live here (default: %(default)s; ${DATA_DIR_ENV} sets it)",
    )
    parser.add_argument("--debug", action="store_true", help="log DEBUG messages")
    parser.add_argument("--log-format", default=LOG_FORMAT, help="Python logging format")


def _model(parser: Options) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    group.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="auto: bfloat16 on CUDA, float32 on CPU",
    )
    group.add_argument(
        "--lina-checkpoint", type=_path, help="local Lina weights (.safetensors or .ckpt) instead of the data dir"
    )
    group.add_argument("--codec-checkpoint", type=_path, help="local WavTokenizer weights (.safetensors or .ckpt)")
    group.add_argument("--codec-config", type=_path, help="the WavTokenizer YAML config for --codec-checkpoint")
    group.add_argument("--tokenizer", type=_path, help="local bpe256.json")
    group.add_argument(
        "--trust-checkpoints",
        action="store_true",
        help="allow full unpickling of the local .ckpt files given above (only for files you trust)",
    )
    group.add_argument(
        "--threads",
        type=_int_between(1, 1024),
        help="CPU threads for the model (default: every core this process may use)",
    )
    group.add_argument(
        "--cpu-quant",
        default="q8",
        choices=CPU_QUANT,
        help="on a CPU: q8 (the decode step with ~8-bit weights, and the codec in bfloat16 where that measured "
        "faster; docs/cpu.md) or none (float32: exactly the model and the codec)",
    )


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's --cpuset-cpus)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _synthesis(parser: Options) -> None:
    group = parser.add_argument_group("synthesis")
    group.add_argument("--voice", help="default voice when a request names none (default: the built-in voice)")
    group.add_argument("--voices-file", type=_path, help="YAML file listing voices kept outside the data dir")
    group.add_argument(
        "--sentence-silence", type=_seconds(0, 10), default=0.2, help="seconds of silence between sentences (0-10)"
    )
    group.add_argument(
        "--max-text-chars", type=_int_between(1, 1_000_000), default=10_000, help="longest text per request"
    )
    group.add_argument(
        "--max-sentence-seconds",
        type=_seconds(0, 600, low_allowed=False),
        default=60.0,
        help="cut off a sentence's audio after this long (at most 600)",
    )
    group.add_argument(
        "--deadline",
        type=_seconds(0, 3600, low_allowed=False),
        default=120.0,
        help="seconds a sentence may wait and generate before it fails with deadline-exceeded",
    )
    group.add_argument(
        "--seed",
        type=_int_between(0, 2**62 - 1),
        help="fixed sampling seed (0 to 2^62-1): the same text gives the same audio (tests, debugging)",
    )


def build_parser(with_voice: bool = True) -> argparse.ArgumentParser:
    return build_command_line(with_voice).parser


def build_command_line(with_voice: bool = True) -> CommandLine:
    """The whole command line. ``with_voice=False`` leaves the ``voice`` command as a stub, so
    the other commands (and --help) start without importing the voice tools (and torch)."""
    parser = argparse.ArgumentParser(prog="wyoming-lina", description="Lina-Speech text to speech over Wyoming")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    line = CommandLine(parser)

    serve = line.command(commands, "serve", help="run the Wyoming server")
    serve.add_argument("--version", action="version", version=__version__)
    _common(serve)
    _model(serve)
    _synthesis(serve)
    net = serve.add_argument_group("server")
    net.add_argument("--uri", default=DEFAULT_URI, help="tcp://HOST:PORT, unix://PATH or stdio://")
    net.add_argument(
        "--zeroconf",
        nargs="?",
        const=DEFAULT_ZEROCONF_NAME,
        metavar="NAME",
        help=f"advertise over zeroconf/mDNS for Home Assistant discovery (name default: {DEFAULT_ZEROCONF_NAME})",
    )
    net.add_argument("--zeroconf-host", help="IPv4 address to advertise (default: detected)")
    net.add_argument(
        "--samples-per-chunk",
        type=_int_between(1, 24_000),
        default=1024,
        help="samples per audio-chunk event (at most 24000 = 1 s)",
    )
    net.add_argument("--no-streaming", action="store_true", help="do not offer text streaming to clients")
    net.add_argument(
        "--max-batch",
        type=_int_between(1, MAX_BATCH),
        help=f"most utterances generated together (default: from the GPU memory free at start-up; {MAX_BATCH} on CPU)",
    )
    net.add_argument(
        "--max-queue",
        type=_int_between(1, 1_000_000),
        default=MAX_QUEUE,
        help="most sentences waiting for the engine (more: error 'overloaded')",
    )
    net.add_argument(
        "--max-connections",
        type=_int_between(1, 10_000),
        default=64,
        help="most open client connections; more get an 'overloaded' error and are closed",
    )
    net.add_argument(
        "--shutdown-timeout",
        type=_seconds(0, 600),
        default=5.0,
        help="on SIGTERM, seconds to let requests in progress finish; the rest end with error 'shutting-down'",
    )
    net.add_argument(
        "--idle-timeout",
        type=_seconds(0, 86_400, low_allowed=False),
        default=60.0,
        help="close a connection silent this long with no request running",
    )
    net.add_argument(
        "--stream-timeout",
        type=_seconds(0, 86_400, low_allowed=False),
        default=300.0,
        help="close a text stream waiting this long for its next chunk",
    )
    net.add_argument(
        "--frame-timeout",
        type=_seconds(0, 3600, low_allowed=False),
        default=10.0,
        help="close a connection whose event takes longer than this to arrive once begun",
    )

    studio = serve.add_argument_group("voice studio (web page and JSON API)")
    studio.add_argument(
        "--http-port", type=_port, help="serve the voice studio on this port (same host as --uri; default: off)"
    )
    studio.add_argument("--http-token", help="require 'Authorization: Bearer TOKEN' on the studio's API")
    studio.add_argument(
        "--asr-uri", help="your Wyoming speech-to-text server (tcp://HOST:PORT), for transcripts of voice clips"
    )

    download = line.command(commands, "download", help="download and convert the model files into the data dir")
    _common(download)
    download.add_argument(
        "--keep-downloads", action="store_true", help="keep the original checkpoints after converting"
    )

    speak = line.command(commands, "speak", help="say a text into a WAV file")
    speak.add_argument("text", help="what to say")
    speak.add_argument("-o", "--output", required=True, help="WAV file to write, or - for stdout")
    _common(speak)
    _model(speak)
    _synthesis(speak)

    # The voice store's commands (wyoming_lina/voices/cli.py). They read the data dir and the
    # voices file from here too: the same defaults, and the same YAML file, as the server.
    if not with_voice:
        line.command(commands, "voice", help="manage voices: add, list, show, remove, tune")
        return line
    from ..voices.cli import add_voice_parser

    config_help = f"YAML file with option values (default: {DEFAULT_CONFIG} if present)"
    voice_options = line.options.setdefault("voice", {})

    def with_config(command: argparse.ArgumentParser) -> None:
        # --config before or after the sub-command (`voice --config X list` = `voice list --config X`),
        # as the model-file options (SUPPRESS: a sub-command never resets what was given before it)
        Options(command, voice_options).add_argument(
            "--config", type=_path, default=argparse.SUPPRESS, help=config_help
        )

    voice = line.commands["voice"] = add_voice_parser(commands, each_command=with_config)
    voice.set_defaults(data_dir=default_data_dir(), debug=False, log_format=LOG_FORMAT, config=None)
    return line


class RuntimeConfigError(ValueError):
    """A device or dtype request this machine cannot satisfy (found out after parsing)."""


# --- YAML -------------------------------------------------------------------------------------
class ConfigError(ValueError):
    pass


MAX_CONFIG_BYTES = 256 * 1024  # the documented file is ~4 KiB


def read_config(path: Path) -> dict[str, Any]:
    """The option values in a YAML file; ConfigError (one line) for anything else."""
    try:
        data = load_yaml(path, max_bytes=MAX_CONFIG_BYTES, what="config file")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    except YamlError as err:
        raise ConfigError(str(err)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of option: value")
    return data


def config_values(
    options: dict[str, argparse.Action], data: dict[str, Any], known: set[str], source: str = "config"
) -> dict[str, Any]:
    """Convert YAML values into defaults for ``parser``'s options.

    Keys are option names with ``-`` or ``_``. A key that no command knows (``known``) is an
    error; a key that another command knows but this one does not is skipped. Values are
    checked as the command line would check them.
    """
    actions = {dest: a for dest, a in options.items() if dest not in ("help", "version", "config")}
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest in spelled:
            raise ConfigError(f"{source}: {spelled[dest]!r} and {key!r} set the same option; keep one")
        spelled[dest] = str(key)
        if dest not in actions:
            if dest not in known:
                raise ConfigError(f"{source}: unknown option {key!r}")
            continue
        out[dest] = _convert(actions[dest], value, f"{source}: {key}")
    return out


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    if action.nargs == 0 and isinstance(action.const, bool):  # store_true / store_false
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if action.nargs == "?" and action.const is not None:  # --zeroconf [NAME]
        if value is None or value is False:
            return None
        if value is True:
            return action.const
    if value is None:
        return None
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        raise ConfigError(f"{where} must be a single value, got {value!r}")
    try:
        converted = action.type(str(value)) if action.type is not None else str(value)
    except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
        raise ConfigError(f"{where}: invalid value {value!r} ({err})") from err
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line over the YAML config over the defaults, then validate."""
    argv = sys.argv[1:] if argv is None else list(argv)
    line = build_command_line(with_voice=argv[:1] == ["voice"])
    parser = line.parser
    args = parser.parse_args(argv)
    command = line.commands[args.command]
    config_path = getattr(args, "config", None)
    if config_path is None and "config" in line.options.get(args.command, {}) and DEFAULT_CONFIG.is_file():
        config_path = DEFAULT_CONFIG
    if config_path is not None:
        known = {dest for name in ("serve", "download", "speak") for dest in line.options[name]}
        # The voice commands share only where the voices are (read as the server reads them).
        reader = line.options["serve" if args.command == "voice" else args.command]
        try:
            values = config_values(reader, read_config(config_path), known, str(config_path))
        except ConfigError as err:
            command.error(str(err))
        if args.command == "voice":
            values = {k: v for k, v in values.items() if k in VOICE_CONFIG_KEYS}
        command.set_defaults(**values)
        args = parser.parse_args(argv)
        args.config = config_path
    validate(command, args)
    return args


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations the per-option checks cannot see; calls parser.error (exit 2)."""
    if getattr(args, "codec_config", None) is not None and getattr(args, "codec_checkpoint", None) is None:
        parser.error("--codec-config needs --codec-checkpoint")
    if hasattr(args, "device"):
        device = args.device
        if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
            parser.error(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")
    if getattr(args, "http_port", None) is not None and not args.uri.startswith("tcp://"):
        parser.error("--http-port needs a tcp:// --uri (the studio listens on the same host)")
    if getattr(args, "asr_uri", None):
        from .asr import asr_uri_problem

        problem = asr_uri_problem(args.asr_uri)
        if problem:
            parser.error(f"--asr-uri {args.asr_uri}: {problem}")
    if getattr(args, "zeroconf", None) is not None:
        if not args.uri.startswith("tcp://"):
            parser.error("--zeroconf needs a tcp:// --uri")
        if args.zeroconf_host is not None:
            problem = advertised_address_problem(args.zeroconf_host)
            if problem:
                parser.error(f"--zeroconf-host {args.zeroconf_host}: {problem}")


def advertised_address_problem(host: str) -> str | None:
    """Why Home Assistant could not use ``host`` from a zeroconf record (None when it can)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "not an IP address"
    if address.version != 4:
        return "not an IPv4 address"
    if address.is_unspecified:
        return "0.0.0.0 is the bind-all address, not one a client can reach"
    if address.is_link_local:
        return "link-local addresses are ignored by Home Assistant"
    if address.is_multicast or address.is_reserved:
        return "not a host address"
    return None
