"""Model files: where they come from, where they live in the data dir, and getting them there.

Layout of ``<data-dir>``::

    models/lina.safetensors          Lina-Speech weights (converted once from the Lightning .ckpt)
    models/wavtokenizer.safetensors  WavTokenizer generator, its config in the file's metadata
    models/bpe256.json               the Lina text tokenizer
    models/SOURCES.json              what each file was made from (repo, revision, SHA-256)
    downloads/...                    raw downloads while converting (removed afterwards)

The published checkpoints are ~2 GB pickled Lightning files. They are downloaded once with
``huggingface_hub`` (resumable, with progress bars), converted into compact safetensors
(no unpickling at start-up, seconds to load) and then deleted. Nothing here touches the
network when the converted files are already present.

Revisions: see ``MODEL_FILES``. The Hugging Face repositories are referenced through the
constants ``LINA_REVISION`` and ``WAVTOKENIZER_REVISION``. They could not be resolved to commit
hashes when this table was written (no network), so they still name the ``main`` branch:
a maintainer with network access must replace them with the commit hashes shown on each
model page's history and fill in the SHA-256 values (``wyoming-lina download`` logs the
SHA-256 of every file it fetches and records it in ``models/SOURCES.json``). The tokenizer is
pinned to an upstream git commit and verified by SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from huggingface_hub import hf_hub_download

from ..atomic import write_atomic
from ..data_dir import CODEC_FILE, LINA_FILE, MODELS_DIR, TOKENIZER_FILE, ensure_writable
from ..errors import CheckpointError

_LOGGER = logging.getLogger(__name__)

# --- the pins (one table) --------------------------------------------------------------------
# NOT YET PINNED TO COMMITS: replace "main" with the 40-hex commit hash of each repository once
# verified with network access (https://huggingface.co/<repo>/commits/main), and add the SHA-256
# of each file. Until then the download logs and records the SHA-256 it received.
LINA_REVISION = "main"
WAVTOKENIZER_REVISION = "main"
LINA_SPEECH_GIT_COMMIT = "7be703abb78f212d3a3113d44e10cc261c53dc12"


@dataclass(frozen=True)
class RemoteFile:
    key: str
    repo: str  # Hugging Face repo id, or "github:owner/name"
    path: str  # path inside the repository
    revision: str
    sha256: str | None  # verified when known
    licence: str

    @property
    def url(self) -> str:
        if self.repo.startswith("github:"):
            return f"https://raw.githubusercontent.com/{self.repo[7:]}/{self.revision}/{self.path}"
        return f"https://huggingface.co/{self.repo}/resolve/{self.revision}/{self.path}"


MODEL_FILES: dict[str, RemoteFile] = {
    f.key: f
    for f in (
        RemoteFile(
            "lina",
            "lina-speech/all-models",
            "lina_gla_gigaspeech_d1024l12_convblind_shortconv_lr2e-4/last.ckpt",
            LINA_REVISION,
            None,
            "CC BY-NC 4.0",
        ),
        RemoteFile(
            "codec-checkpoint",
            "novateur/WavTokenizer-medium-speech-75token",
            "wavtokenizer_medium_speech_320_24k.ckpt",
            WAVTOKENIZER_REVISION,
            None,
            "MIT",
        ),
        RemoteFile(
            "codec-config",
            "novateur/WavTokenizer-medium-speech-75token",
            "wavtokenizer_mediumdata_frame75_3s_nq1_code4096_dim512_kmeans200_attn.yaml",
            WAVTOKENIZER_REVISION,
            None,
            "MIT",
        ),
        RemoteFile(
            "tokenizer",
            "github:theodorblackbird/lina-speech",
            "bpe256.json",
            LINA_SPEECH_GIT_COMMIT,
            "1f91d06937bd24e518c9da5d0c2deeb27500526c637899cd25a591331abdc88d",
            "CC BY-NC 4.0",
        ),
    )
}

SOURCES_FILE = "SOURCES.json"


class ModelFilesMissingError(CheckpointError):
    """Model files are neither given, nor in the data dir, nor downloadable right now."""

    code = "model-files-missing"


@dataclass(frozen=True)
class ModelFiles:
    """Everything needed to build the model, codec and tokenizer."""

    lina: Path
    codec_checkpoint: Path
    codec_config: Path | None  # None: the config is in the safetensors metadata
    tokenizer: Path
    lina_trusted: bool = False  # may the Lina file be fully unpickled (only for our own downloads)


def is_offline() -> bool:
    """HF_HUB_OFFLINE (read at call time, so tests and late environment changes count)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_url(url: str, timeout: float = 60.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https URL)
        return response.read()


def probe_url(url: str, timeout: float = 10.0) -> None:
    """Raise OSError when the server of ``url`` cannot be reached at all (no name resolution,
    refused, timed out). Any HTTP answer, an error status too, means it can. One attempt, no
    retries: this is what tells "no network" from a bad file before any download is tried."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 (fixed https URL)
            pass
    except urllib.error.HTTPError:
        pass


def hub_endpoint() -> str:
    """Where ``hf_hub_download`` goes (``HF_ENDPOINT`` moves it to a mirror)."""
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _route_hub_logs_through_ours() -> None:
    """huggingface_hub puts its own stderr handler on its logger and also passes each record up
    to ours, so each of its warnings (e.g. a retry) would print twice. Keep only ours."""
    hub_logger = logging.getLogger("huggingface_hub")
    for handler in list(hub_logger.handlers):
        if type(handler) is logging.StreamHandler:
            hub_logger.removeHandler(handler)


class ModelDownloader:
    """Fills ``<data-dir>/models`` (download, verify, convert), network only when files are missing.

    ``hub_download``, ``url_fetch`` and ``probe`` are the network entry points
    (``hf_hub_download``, urllib, and the one-attempt reachability check made once per server
    before its first download); tests pass local stand-ins.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        hub_download: Callable[..., str] = hf_hub_download,
        url_fetch: Callable[[str], bytes] = fetch_url,
        probe: Callable[[str], None] = probe_url,
        offline: bool | None = None,
        keep_downloads: bool = False,
    ):
        self.data_dir = Path(data_dir)
        self.models = self.data_dir / MODELS_DIR
        self.downloads = self.data_dir / "downloads"
        self.hub_download = hub_download
        self.url_fetch = url_fetch
        self.probe = probe
        self.offline = is_offline() if offline is None else offline
        self.keep_downloads = keep_downloads
        self.unreachable: dict[str, str] = {}  # server -> why it cannot be reached
        self._probed: set[str] = set()

    # --- where things are ---------------------------------------------------------------------
    @property
    def lina_path(self) -> Path:
        return self.models / LINA_FILE

    @property
    def codec_path(self) -> Path:
        return self.models / CODEC_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.models / TOKENIZER_FILE

    def raw_path(self, remote: RemoteFile) -> Path:
        """Where the raw download lands (hf_hub_download's local_dir layout)."""
        return self.downloads / remote.key / remote.path

    def missing(self, need: tuple[str, ...] = ("lina", "codec", "tokenizer")) -> list[str]:
        present = {"lina": self.lina_path, "codec": self.codec_path, "tokenizer": self.tokenizer_path}
        return [name for name in need if not present[name].is_file()]

    # --- getting them ----------------------------------------------------------------------------
    def ensure(self, need: tuple[str, ...] = ("lina", "codec", "tokenizer")) -> None:
        """Make the converted files in ``need`` exist, downloading and converting what is missing.

        Raises ModelFilesMissingError (one message for all missing files) when offline or when
        a download fails; other files are still completed where possible.
        """
        todo = self.missing(need)
        if not todo:
            return
        ensure_writable(self.data_dir)  # one line naming the folder and the fix, before any download
        self.models.mkdir(parents=True, exist_ok=True)
        problems: list[str] = []
        for name in todo:
            try:
                {"lina": self._make_lina, "codec": self._make_codec, "tokenizer": self._make_tokenizer}[name]()
            except _Unavailable as err:
                problems.append(str(err))
        if problems:
            raise ModelFilesMissingError(self._missing_message(problems))
        if not self.keep_downloads and self.downloads.exists():
            shutil.rmtree(self.downloads, ignore_errors=True)

    def _make_lina(self) -> None:
        remote = MODEL_FILES["lina"]
        raw = self._obtain(remote)
        from ..model import load_lina, save_safetensors  # torch: only once there is work for it

        _LOGGER.info("converting %s to %s (once)", raw.name, self.lina_path)
        # Our own download from the pinned repository: full unpickling is allowed if needed.
        model = load_lina(raw, device="cpu", trusted=True)
        write_atomic(self.lina_path, functools.partial(save_safetensors, model))
        self._record(remote, raw)
        del model

    def _make_codec(self) -> None:
        config = self._obtain(MODEL_FILES["codec-config"])
        raw = self._obtain(MODEL_FILES["codec-checkpoint"])
        from ..codec import load_codec, save_codec_safetensors

        _LOGGER.info("converting %s to %s (once)", raw.name, self.codec_path)
        codec = load_codec(config, raw, device="cpu")
        write_atomic(self.codec_path, lambda tmp: save_codec_safetensors(codec, tmp))
        self._record(MODEL_FILES["codec-config"], config)
        self._record(MODEL_FILES["codec-checkpoint"], raw)

    def _make_tokenizer(self) -> None:
        remote = MODEL_FILES["tokenizer"]
        self._check_network(remote, remote.url)
        try:
            data = self.url_fetch(remote.url)
        except OSError as err:  # URLError, HTTPError, timeouts are all OSError
            raise _Unavailable(f"{remote.url} ({err})") from err
        digest = hashlib.sha256(data).hexdigest()
        if remote.sha256 and digest != remote.sha256:
            raise _Unavailable(f"{remote.url} (SHA-256 {digest} does not match the pinned {remote.sha256})")
        write_atomic(self.tokenizer_path, lambda tmp: Path(tmp).write_bytes(data))
        self._record(remote, self.tokenizer_path)

    def _obtain(self, remote: RemoteFile) -> Path:
        """The raw file: already in downloads/ (placed by hand or an earlier run) or downloaded now."""
        raw = self.raw_path(remote)
        if not raw.is_file():
            self._check_network(remote, hub_endpoint())
            _route_hub_logs_through_ours()
            _LOGGER.info("downloading %s from %s (revision %s)", remote.path, remote.repo, remote.revision)
            try:
                got = self.hub_download(
                    repo_id=remote.repo,
                    filename=remote.path,
                    revision=remote.revision,
                    local_dir=str(self.downloads / remote.key),
                )
            except Exception as err:  # huggingface_hub raises OSError subclasses and a few others
                raise _Unavailable(f"{remote.url} ({type(err).__name__}: {err})") from err
            raw = Path(got)
        digest = sha256_of(raw)
        if remote.sha256 and digest != remote.sha256:
            raw.unlink(missing_ok=True)
            raise _Unavailable(f"{remote.url} (SHA-256 {digest} does not match the pinned {remote.sha256}; removed)")
        _LOGGER.info("%s: SHA-256 %s", remote.path, digest)
        return raw

    def _check_network(self, remote: RemoteFile, url: str) -> None:
        """Raise _Unavailable without trying when offline, or when ``url``'s server was found
        unreachable; the first file from each server checks it (once, no retries)."""
        if self.offline:
            raise _Unavailable(f"{remote.url} (not tried: HF_HUB_OFFLINE is set)")
        parts = urllib.parse.urlsplit(url)
        server = f"{parts.scheme}://{parts.netloc}"
        if server not in self._probed:
            self._probed.add(server)
            try:
                self.probe(server + "/")
            except OSError as err:
                reason = getattr(err, "reason", None) or err
                self.unreachable[server] = str(reason)
                _LOGGER.debug("cannot reach %s (%s): not downloading from there", server, reason)
        if server in self.unreachable:
            raise _Unavailable(f"{remote.url} (not tried: {server} cannot be reached)")

    def _record(self, remote: RemoteFile, path: Path) -> None:
        """Remember the source and SHA-256 of what a converted file was made from."""
        sources_path = self.models / SOURCES_FILE
        try:
            sources = json.loads(sources_path.read_text())
        except (OSError, ValueError):
            sources = {}
        sources[remote.key] = {**asdict(remote), "sha256": sha256_of(path)}
        write_atomic(sources_path, lambda tmp: Path(tmp).write_text(json.dumps(sources, indent=2) + "\n"))

    def _missing_message(self, problems: list[str]) -> str:
        lines = ["Model files are missing and could not be fetched:", *(f"  - {p}" for p in problems)]
        if self.offline:
            lines.append(
                "HF_HUB_OFFLINE is set: unset it where the network can be reached and run `wyoming-lina download`,"
            )
        elif self.unreachable:
            servers = "; ".join(f"{server}: {reason}" for server, reason in self.unreachable.items())
            lines.append(f"No network ({servers}): connect this machine (behind a proxy: set HTTPS_PROXY)")
            lines.append("and run `wyoming-lina download`,")
        else:
            lines.append("Run `wyoming-lina download` again once the problem above is solved,")
        lines.append("or place the original files by hand and start again (they are converted once):")
        for remote in MODEL_FILES.values():
            target = self.tokenizer_path if remote.key == "tokenizer" else self.raw_path(remote)
            lines.append(f"  {target}  <-  {remote.url}")
        lines.append(
            "or point to local files with --lina-checkpoint, --codec-checkpoint (+ --codec-config) and --tokenizer."
        )
        return "\n".join(lines)


class _Unavailable(Exception):
    """One file that cannot be fetched now (collected into ModelFilesMissingError)."""


def resolve_model_files(
    data_dir: str | Path,
    *,
    lina: str | Path | None = None,
    codec_checkpoint: str | Path | None = None,
    codec_config: str | Path | None = None,
    tokenizer: str | Path | None = None,
    trust_checkpoints: bool = False,
    downloader: ModelDownloader | None = None,
) -> ModelFiles:
    """Local files where given; everything else from the data dir (downloaded when missing)."""
    for label, path in (
        ("--lina-checkpoint", lina),
        ("--codec-checkpoint", codec_checkpoint),
        ("--codec-config", codec_config),
        ("--tokenizer", tokenizer),
    ):
        if path is not None and not Path(path).is_file():
            raise ModelFilesMissingError(f"{label} {path}: no such file")
    downloader = downloader or ModelDownloader(data_dir)
    need = tuple(
        name for name, given in (("lina", lina), ("codec", codec_checkpoint), ("tokenizer", tokenizer)) if given is None
    )
    downloader.ensure(need)
    return ModelFiles(
        lina=Path(lina) if lina is not None else downloader.lina_path,
        codec_checkpoint=Path(codec_checkpoint) if codec_checkpoint is not None else downloader.codec_path,
        codec_config=Path(codec_config) if codec_config is not None else None,
        tokenizer=Path(tokenizer) if tokenizer is not None else downloader.tokenizer_path,
        lina_trusted=trust_checkpoints if lina is not None else False,
    )
