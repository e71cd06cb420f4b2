"""Command line + YAML configuration: precedence, validation, and the shipped config file."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from wyoming_lina.server import options
from wyoming_lina.server.options import DEFAULT_CONFIG, build_command_line, build_parser, parse_args

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run from an empty folder, so the repository's config/lina.yaml is not picked up by accident."""
    monkeypatch.chdir(tmp_path)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_config():
    args = parse_args(["serve"])
    assert args.uri == "tcp://0.0.0.0:10200"
    assert args.samples_per_chunk == 1024 and args.sentence_silence == 0.2
    assert args.zeroconf is None and args.no_streaming is False and args.device == "auto"
    assert args.config is None


def test_command_line_beats_yaml_beats_defaults(tmp_path):
    config = write_config(
        tmp_path / "c.yaml",
        "uri: tcp://127.0.0.1:10555\nsamples-per-chunk: 256\nsentence_silence: 0.5\nno-streaming: true\n"
        f"data-dir: {tmp_path / 'd'}\nzeroconf: true\n",
    )
    args = parse_args(["serve", "--config", str(config), "--samples-per-chunk", "2048"])
    assert args.samples_per_chunk == 2048  # command line
    assert args.uri == "tcp://127.0.0.1:10555" and args.sentence_silence == 0.5 and args.no_streaming  # YAML
    assert args.data_dir == tmp_path / "d" and isinstance(args.data_dir, Path)
    assert args.zeroconf == "lina"  # `zeroconf: true` means the default name
    assert args.max_text_chars == 10_000  # default
    assert args.config == config


def test_default_config_file_is_read_from_the_working_directory(tmp_path):
    (tmp_path / "config").mkdir()
    write_config(tmp_path / DEFAULT_CONFIG, "voice: alice\nzeroconf: kitchen\n")
    args = parse_args(["serve"])
    assert args.voice == "alice" and args.zeroconf == "kitchen"
    assert parse_args(["serve", "--voice", "bob"]).voice == "bob"


def test_config_shared_options_reach_speak_and_voice(tmp_path):
    config = write_config(
        tmp_path / "c.yaml", f"uri: tcp://127.0.0.1:1\ndevice: cpu\ndata-dir: {tmp_path}\nvoices-file: v.yaml\n"
    )
    speak = parse_args(["speak", "Hi.", "-o", "x.wav", "--config", str(config)])
    assert speak.device == "cpu" and speak.data_dir == tmp_path  # `uri` is serve-only: skipped here
    voice = parse_args(["voice", "--config", str(config), "list"])
    assert voice.data_dir == tmp_path and voice.voices_file == Path("v.yaml")
    assert not hasattr(voice, "uri") and getattr(voice, "device", None) is None


def test_config_asr_uri_reaches_the_voice_commands(tmp_path):
    config = write_config(tmp_path / "c.yaml", "asr-uri: tcp://whisper:10300\nhttp-port: 8080\n")
    assert parse_args(["serve", "--config", str(config)]).http_port == 8080
    add = parse_args(["voice", "--config", str(config), "add", "alice", "--audio", "a.wav"])
    assert add.asr_uri == "tcp://whisper:10300" and not hasattr(add, "http_port")
    tune = parse_args(
        ["voice", "--config", str(config), "tune", "bob", "--recording", "r.wav", "--asr-uri", "tcp://x:1"]
    )
    assert tune.asr_uri == "tcp://x:1" and tune.recording == ["r.wav"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("no-such-option: 1\n", "unknown option"),
        ("samples-per-chunk: 0\n", "samples-per-chunk"),
        ("samples-per-chunk: many\n", "samples-per-chunk"),
        ("no-streaming: maybe\n", "true or false"),
        ("dtype: float16\n", "not one of"),
        ("sentence-silence: [1, 2]\n", "single value"),
        ("- just\n- a list\n", "mapping"),
        ("uri: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_is_a_usage_error(tmp_path, capsys, text, message):
    config = write_config(tmp_path / "bad.yaml", text)
    with pytest.raises(SystemExit) as exc:
        parse_args(["serve", "--config", str(config)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_explicit_config_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["serve", "--config", str(tmp_path / "absent.yaml")])
    assert "cannot read config file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "--codec-config", "c.yaml"], "--codec-config needs --codec-checkpoint"),
        (["serve", "--device", "gpu"], "--device must be"),
        (["serve", "--zeroconf", "--uri", "unix:///tmp/s"], "needs a tcp://"),
        (["serve", "--zeroconf", "--zeroconf-host", "0.0.0.0"], "bind-all"),
        (["serve", "--zeroconf", "--zeroconf-host", "169.254.0.9"], "link-local"),
        (["serve", "--sentence-silence", "-1"], "must be at least 0 and at most 10 seconds"),
        (["serve", "--max-sentence-seconds", "0"], "must be more than 0"),
        # edges that once ended in tracebacks or absurd allocations (issue 19)
        (["serve", "--sentence-silence", "inf"], "at most 10 seconds"),
        (["serve", "--sentence-silence", "1e9"], "at most 10 seconds"),
        (["serve", "--sentence-silence", "nan"], "at most 10 seconds"),
        (["serve", "--max-sentence-seconds", "inf"], "at most 600 seconds"),
        (["serve", "--seed", "12345678901234567890123"], "must be between 0 and"),
        (["serve", "--max-batch", "100000000"], "must be between 1 and 256"),
        (["serve", "--samples-per-chunk", "1000000000"], "must be between 1 and 24000"),
        (["serve", "--idle-timeout", "0"], "must be more than 0"),
        (["serve", "--http-port", "8080", "--uri", "unix:///tmp/s"], "--http-port needs a tcp://"),
        (["serve", "--http-port", "70000"], "port number"),
        (["serve", "--asr-uri", "http://whisper:10300"], "must be tcp://HOST:PORT"),
        (["serve", "--asr-uri", "tcp://whisper"], "must be tcp://HOST:PORT"),
    ],
)
def test_invalid_combinations(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_zeroconf_name_forms():
    assert parse_args(["serve", "--zeroconf"]).zeroconf == "lina"
    assert parse_args(["serve", "--zeroconf", "kitchen", "--zeroconf-host", "192.168.1.2"]).zeroconf == "kitchen"


def test_shipped_config_documents_every_option_with_its_default(monkeypatch):
    """config/lina.yaml lists each serve option, commented out, with exactly the built-in default."""
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("WYOMING_LINA_DATA_DIR", raising=False)
    text = (REPO / "config" / "lina.yaml").read_text()
    assert yaml.safe_load(text) is None, "the shipped config must only hold comments (no second set of defaults)"
    uncommented = "\n".join(line[2:] for line in text.splitlines() if re.match(r"# [a-z][a-z-]*: ", line))
    documented = {k.replace("-", "_"): v for k, v in yaml.safe_load(uncommented).items()}
    line = build_command_line()
    serve, serve_options = line.commands["serve"], line.options["serve"]
    wanted = {dest for dest in serve_options if dest not in ("help", "version", "config")}
    assert wanted <= set(documented), f"undocumented options: {sorted(wanted - set(documented))}"
    values = options.config_values(serve_options, {k: v for k, v in documented.items() if k in wanted}, wanted)
    for dest in wanted:
        default = serve.get_default(dest)
        assert values[dest] == default, f"{dest}: config/lina.yaml says {values[dest]!r}, the default is {default!r}"


def test_version_and_help_are_cheap(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip()


def test_voice_command_is_wired():
    args = parse_args(["voice", "list"])
    assert args.command == "voice" and args.voice_command == "list"
    assert isinstance(args.data_dir, Path)
    assert isinstance(build_command_line().commands["voice"], argparse.ArgumentParser)
