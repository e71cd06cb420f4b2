"""Shared test helpers: where the upstream-produced fixtures live.

The fixtures sit in ``../shared/fixtures`` beside the repository. Locally a missing
fixture skips the test; in CI (``CI=true``) it fails, so a broken checkout cannot pass.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("WYOMING_LINA_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


def fixture_path(*parts: str) -> Path:
    """Path of a shared fixture file; fail in CI, skip elsewhere, when it is missing."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        message = f"fixture missing: {path}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def lina_dir() -> Path:
    return fixture_path("lina-tiny")


@pytest.fixture(scope="session")
def codec_dir() -> Path:
    return fixture_path("wavtokenizer-tiny")


# Module-scoped: each test module gets its own fresh instance (some tests patch or tune them).
@pytest.fixture(scope="module")
def model(lina_dir):
    """The upstream tiny Lina model, float32 on CPU."""
    from wyoming_lina.model import load_lina

    return load_lina(lina_dir / "model.ckpt")


@pytest.fixture(scope="module")
def codec(codec_dir):
    """The upstream tiny WavTokenizer (shares Lina-tiny's 64-code vocabulary)."""
    from wyoming_lina.codec import load_codec

    return load_codec(codec_dir / "config.yaml", codec_dir / "model.ckpt")


@pytest.fixture(scope="module")
def tokenizer(lina_dir):
    """The upstream bpe256 tokenizer."""
    from wyoming_lina.text import LinaTokenizer

    return LinaTokenizer(lina_dir / "bpe256.json")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors: extra threads only add contention on a
    busy test machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
