"""The data dir as every command finds it (the environment, YAML, the command line), the files
written there (readable by the group that shares it, atomically), and the voice commands run
as a container user runs them."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from wyoming_lina.atomic import atomic_write_bytes, write_atomic
from wyoming_lina.data_dir import DATA_DIR_ENV, default_data_dir
from wyoming_lina.server.options import parse_args
from wyoming_lina.voices.cli import resume_command


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no config/lina.yaml of the repository
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _run(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120)


# --- where the data dir is ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["download"],
        ["speak", "Hi.", "-o", "x.wav"],
        ["voice", "list"],
        ["voice", "tune", "bob", "--data", "d"],
    ],
)
def test_every_command_takes_the_data_dir_from_the_environment(argv, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))
    assert parse_args(argv).data_dir == tmp_path / "from-env"
    # the YAML file and the command line still win, in that order
    config = tmp_path / "c.yaml"
    config.write_text(f"data-dir: {tmp_path / 'from-yaml'}\n")
    assert parse_args([*argv, "--config", str(config)]).data_dir == tmp_path / "from-yaml"
    assert (
        parse_args([*argv, "--config", str(config), "--data-dir", str(tmp_path / "cli")]).data_dir == tmp_path / "cli"
    )


def test_without_the_variable_the_xdg_folder_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "wyoming-lina"
    monkeypatch.setenv(DATA_DIR_ENV, "")  # empty means unset
    assert default_data_dir() == tmp_path / "xdg" / "wyoming-lina"


def test_voice_options_are_accepted_after_the_subcommand_too(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"data-dir: {tmp_path / 'voices-here'}\nvoices-file: extra.yaml\n")
    before = parse_args(["voice", "--config", str(config), "list"])
    after = parse_args(["voice", "list", "--config", str(config)])
    for args in (before, after):
        assert args.data_dir == tmp_path / "voices-here" and args.voices_file == Path("extra.yaml")
        assert args.config == config


def test_voice_commands_write_where_the_server_reads(tmp_path, lina_dir, monkeypatch):
    """As in the container: no --data-dir anywhere, only the variable the image sets. The voice
    added by `wyoming-lina voice add` is listed by the standalone voice CLI and found by the
    server's own option parser."""
    data = tmp_path / "data"
    env = {DATA_DIR_ENV: str(data)}
    added = _run(
        ["-m", "wyoming_lina", "voice", "add", "alice", "--state", str(lina_dir / "speaker_state.safetensors")],
        env,
        tmp_path,
    )
    assert added.returncode == 0, added.stderr
    assert (data / "voices" / "alice" / "voice.yaml").is_file()
    listed = _run(["-m", "wyoming_lina.voices.cli", "list", "--json"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert '"name": "alice"' in listed.stdout
    from wyoming_lina.voices.store import VoiceStore

    monkeypatch.setenv(DATA_DIR_ENV, str(data))
    assert "alice" in VoiceStore(parse_args(["serve"]).data_dir)


def test_voice_tune_says_where_it_looked_for_the_model_files(tmp_path):
    data = tmp_path / "data"
    result = _run(
        ["-m", "wyoming_lina.voices.cli", "tune", "bob", "--data", str(tmp_path)], {DATA_DIR_ENV: str(data)}, tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert str(data / "models") in result.stderr and "wyoming-lina download" in result.stderr


def test_tuning_resume_hint_is_the_same_run_with_resume(tmp_path):
    argv = [
        "voice", "tune", "bob", "--data", "rec dir/bob", "--max-steps", "300", "--lr", "0.05",
        "--language", "de", "--data-dir", str(tmp_path / "d"), "--lina-checkpoint", "my lina.safetensors",
    ]  # fmt: skip
    args = parse_args(argv)
    args.given_model_files = ["lina_checkpoint"]
    hint = resume_command(args)
    words = shlex.split(hint)
    assert words[:2] == ["wyoming-lina", "voice"] and words[-1] == "--resume"
    again = parse_args(words[1:])
    for key in ("name", "data", "tune_max_steps", "tune_lr", "language", "data_dir", "lina_checkpoint"):
        assert getattr(again, key) == getattr(args, key), key
    assert again.resume and not args.resume


# --- permissions and atomic writes --------------------------------------------------------------
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_mode_the_umask_allows(tmp_path, umask, mask, mode):
    umask(mask)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    write_atomic(tmp_path / "b.bin", lambda tmp: Path(tmp).write_bytes(b"y"))
    for name in ("a.bin", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")

    def half_then_fail(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_a_voice_is_readable_by_the_group_sharing_the_data_dir(tmp_path, lina_dir, umask):
    from wyoming_lina.voices.store import VoiceStore

    umask(0o022)
    store = VoiceStore(tmp_path)
    store.add("alice", state=lina_dir / "speaker_state.safetensors", description="A")
    folder = tmp_path / "voices" / "alice"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes


def test_voice_add_into_an_unwritable_data_dir_is_one_line(tmp_path, lina_dir):
    data = tmp_path / "data"
    data.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # root writes anywhere: take that right away from the child
        os.chown(data, 1234, 1234)
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
    else:
        data.chmod(0o555)
    env = {**os.environ, DATA_DIR_ENV: str(data), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "wyoming_lina", "voice", "add", "alice", "--state", str(lina_dir / "speaker_state.safetensors")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot write to the data dir {data}" in result.stderr and "chown" in result.stderr
