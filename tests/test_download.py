"""Model files: a local stand-in for the hub (never the network), conversion, offline behaviour."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wyoming_lina.server.download import (
    MODEL_FILES,
    ModelDownloader,
    ModelFilesMissingError,
    resolve_model_files,
)


class FakeHub:
    """Serves the fixture files under the published names, like ``hf_hub_download(local_dir=...)``."""

    def __init__(self, lina_dir: Path, codec_dir: Path):
        self.files = {
            (MODEL_FILES["lina"].repo, MODEL_FILES["lina"].path): lina_dir / "model.ckpt",
            (MODEL_FILES["codec-checkpoint"].repo, MODEL_FILES["codec-checkpoint"].path): codec_dir / "model.ckpt",
            (MODEL_FILES["codec-config"].repo, MODEL_FILES["codec-config"].path): codec_dir / "config.yaml",
        }
        self.tokenizer = (lina_dir / "bpe256.json").read_bytes()
        self.calls: list[tuple[str, str, str]] = []
        self.urls: list[str] = []

    def hub_download(self, *, repo_id, filename, revision, local_dir):
        self.calls.append((repo_id, filename, revision))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.files[(repo_id, filename)], target)
        return str(target)

    def fetch(self, url):
        self.urls.append(url)
        return self.tokenizer


def no_network(*args, **kwargs):
    raise AssertionError("the network must not be used")


def reachable(url):
    """The stand-in hub is always there."""


@pytest.fixture
def hub(lina_dir, codec_dir):
    return FakeHub(lina_dir, codec_dir)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _offline_env(**extra) -> dict:
    """No HF_HUB_OFFLINE, and every request sent to a closed port on this machine (a proxy
    that refuses): the network cannot be reached, and nothing leaves the machine."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in ("HF_HUB_OFFLINE", "NO_PROXY", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    }
    return {**env, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", **extra}


def test_pins_are_one_table_with_the_tokenizer_verified(lina_dir):
    tokenizer = MODEL_FILES["tokenizer"]
    assert tokenizer.revision == "7be703abb78f212d3a3113d44e10cc261c53dc12"
    assert tokenizer.url == (
        "https://raw.githubusercontent.com/theodorblackbird/lina-speech/"
        "7be703abb78f212d3a3113d44e10cc261c53dc12/bpe256.json"
    )
    assert tokenizer.sha256 == hashlib.sha256((lina_dir / "bpe256.json").read_bytes()).hexdigest()
    assert MODEL_FILES["lina"].repo == "lina-speech/all-models"
    assert MODEL_FILES["lina"].path == "lina_gla_gigaspeech_d1024l12_convblind_shortconv_lr2e-4/last.ckpt"
    assert {f.repo for k, f in MODEL_FILES.items() if k.startswith("codec")} == {
        "novateur/WavTokenizer-medium-speech-75token"
    }
    assert all(f.revision for f in MODEL_FILES.values())


def test_download_converts_once_and_records_sources(tmp_path, hub, lina_dir, codec_dir, umask_022):
    from wyoming_lina.codec import load_codec
    from wyoming_lina.model import load_lina

    downloader = ModelDownloader(
        tmp_path, hub_download=hub.hub_download, url_fetch=hub.fetch, probe=reachable, offline=False
    )
    downloader.ensure()
    assert sorted(hub.calls) == sorted((f.repo, f.path, f.revision) for k, f in MODEL_FILES.items() if k != "tokenizer")
    assert hub.urls == [MODEL_FILES["tokenizer"].url]

    # converted weights equal the originals, and load without the checkpoints or the yaml
    original = load_lina(lina_dir / "model.ckpt")
    converted = load_lina(downloader.lina_path)
    assert downloader.lina_path.suffix == ".safetensors"
    for (name, a), (_, b) in zip(original.state_dict().items(), converted.state_dict().items()):
        assert torch.equal(a, b), name
    codec = load_codec(None, downloader.codec_path)  # config read from the file's metadata
    reference = load_codec(codec_dir / "config.yaml", codec_dir / "model.ckpt")
    codes = torch.randint(0, reference.config.codebook_size, (1, 20), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(codec.decode(codes), reference.decode(codes))
    assert downloader.tokenizer_path.read_bytes() == (lina_dir / "bpe256.json").read_bytes()

    sources = json.loads((tmp_path / "models" / "SOURCES.json").read_text())
    assert set(sources) == set(MODEL_FILES)
    assert sources["lina"]["sha256"] == hashlib.sha256((lina_dir / "model.ckpt").read_bytes()).hexdigest()
    assert not (tmp_path / "downloads").exists()  # the big originals are gone after conversion
    # readable by the group and others that share the data dir (the container's user and the host's)
    assert stat.S_IMODE((tmp_path / "models").stat().st_mode) == 0o755
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "models").iterdir()} == {
        name: 0o644 for name in ("lina.safetensors", "wavtokenizer.safetensors", "bpe256.json", "SOURCES.json")
    }

    # a restart touches no network
    again = ModelDownloader(tmp_path, hub_download=no_network, url_fetch=no_network, probe=no_network, offline=False)
    again.ensure()
    assert again.missing() == []


def test_offline_with_missing_files_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    downloader = ModelDownloader(tmp_path, hub_download=no_network, url_fetch=no_network)
    with pytest.raises(ModelFilesMissingError) as exc:
        downloader.ensure()
    message = str(exc.value)
    assert "HF_HUB_OFFLINE" in message
    for remote in MODEL_FILES.values():
        assert remote.url in message
    assert str(downloader.raw_path(MODEL_FILES["lina"])) in message
    assert str(downloader.tokenizer_path) in message
    assert "--lina-checkpoint" in message
    assert exc.value.code == "model-files-missing"


def test_network_error_is_reported_per_file(tmp_path, hub):
    def broken(**kwargs):
        raise OSError("Temporary failure in name resolution")

    downloader = ModelDownloader(tmp_path, hub_download=broken, url_fetch=hub.fetch, probe=reachable, offline=False)
    with pytest.raises(ModelFilesMissingError, match="name resolution"):
        downloader.ensure()
    assert downloader.tokenizer_path.is_file()  # what could be fetched was kept
    assert downloader.missing() == ["lina", "codec"]


def test_tokenizer_with_wrong_checksum_is_refused(tmp_path, hub):
    downloader = ModelDownloader(
        tmp_path, hub_download=hub.hub_download, url_fetch=lambda url: b"{}", probe=reachable, offline=False
    )
    with pytest.raises(ModelFilesMissingError, match="SHA-256"):
        downloader.ensure(("tokenizer",))
    assert not downloader.tokenizer_path.exists()


def test_files_placed_by_hand_are_converted_offline(tmp_path, lina_dir, codec_dir):
    downloader = ModelDownloader(tmp_path, hub_download=no_network, url_fetch=no_network, offline=True)
    for key, source in (
        ("lina", lina_dir / "model.ckpt"),
        ("codec-checkpoint", codec_dir / "model.ckpt"),
        ("codec-config", codec_dir / "config.yaml"),
    ):
        target = downloader.raw_path(MODEL_FILES[key])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    downloader.models.mkdir(parents=True)
    shutil.copyfile(lina_dir / "bpe256.json", downloader.tokenizer_path)
    downloader.ensure()
    assert downloader.missing() == []


def test_local_files_override_the_data_dir(tmp_path, hub, lina_dir, codec_dir):
    downloader = ModelDownloader(
        tmp_path, hub_download=hub.hub_download, url_fetch=hub.fetch, probe=reachable, offline=False
    )
    files = resolve_model_files(
        tmp_path,
        lina=lina_dir / "model.ckpt",
        codec_checkpoint=codec_dir / "model.ckpt",
        codec_config=codec_dir / "config.yaml",
        downloader=downloader,
    )
    assert hub.calls == [] and hub.urls == [MODEL_FILES["tokenizer"].url]  # only the tokenizer was missing
    assert files.lina == lina_dir / "model.ckpt" and files.codec_config == codec_dir / "config.yaml"
    assert files.tokenizer == downloader.tokenizer_path and files.lina_trusted is False
    with pytest.raises(ModelFilesMissingError, match="--tokenizer"):
        resolve_model_files(tmp_path, tokenizer=tmp_path / "nope.json", downloader=downloader)


def test_download_command_offline_exits_nonzero_with_the_message(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "wyoming_lina", "download", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "Model files are missing" in result.stderr and "Traceback" not in result.stderr
    assert str(tmp_path / "models" / "bpe256.json") in result.stderr


def test_unreachable_network_is_found_once_and_named(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probed = []

    def unreachable(url):
        probed.append(url)
        raise OSError("[Errno -2] Name or service not known")

    downloader = ModelDownloader(tmp_path, hub_download=no_network, url_fetch=no_network, probe=unreachable)
    with pytest.raises(ModelFilesMissingError) as exc:
        downloader.ensure()
    # one check per server, no download attempted (hf_hub_download would retry each file for ~20 s)
    assert sorted(probed) == ["https://huggingface.co/", "https://raw.githubusercontent.com/"]
    message = str(exc.value)
    assert "No network" in message and "Name or service not known" in message
    assert "HF_HUB_OFFLINE" not in message  # it was never set: do not tell the user to unset it
    for remote in MODEL_FILES.values():
        assert remote.url in message


def test_download_command_without_network_is_fast_quiet_and_says_why(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "wyoming_lina", "download", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, env=_offline_env(), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 20, f"{elapsed:.1f} s: retries?"
    assert "No network" in result.stderr and "HF_HUB_OFFLINE" not in result.stderr
    assert "Traceback" not in result.stderr and "Retrying" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), "a line was printed twice"


def test_hub_warnings_are_printed_once(tmp_path):
    """huggingface_hub's own handler would print each of its warnings a second time."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stderr, format='%(levelname)s %(name)s: %(message)s')\n"
        "from wyoming_lina.server import download\n"
        "download._route_hub_logs_through_ours()\n"
        "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Retrying in 1s") == 1, result.stderr


def _unwritable(path: Path) -> list[str]:
    """Make ``path`` a folder this test's child process cannot write; returns the command prefix
    that starts the child without root's right to write anywhere (when the tests run as root)."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return []
    os.chown(path, 1234, 1234)
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def test_unwritable_data_dir_is_one_line_with_the_fix(tmp_path):
    data = tmp_path / "data"
    prefix = _unwritable(data)
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "wyoming_lina", "download", "--data-dir", str(data)],
        capture_output=True, text=True, env=_offline_env(), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot write to the data dir {data}" in lines[0]
    assert f"sudo chown -R {os.getuid()}:{os.getgid()}" in lines[0] and str(data) in lines[0]
