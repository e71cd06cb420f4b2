"""Shared test helpers: where the upstream-produced fixtures live.

The fixtures sit in ``../shared/fixtures`` beside the repository (or ``$WYOMING_LINA_FIXTURES``).
Without them most tests cannot run, and a run that skipped them would look green: so a missing
fixtures folder stops the run at once with one message, and a missing fixture fails its test.
Only ``WYOMING_LINA_ALLOW_MISSING_FIXTURES=1`` turns both into skips (to run the other tests in
a clone without ``../shared``), and never in CI (``CI=true``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("WYOMING_LINA_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
ALLOW_MISSING_ENV = "WYOMING_LINA_ALLOW_MISSING_FIXTURES"


def _true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def missing_fixtures_allowed() -> bool:
    return _true(ALLOW_MISSING_ENV) and not _true("CI")


def pytest_sessionstart(session):
    if not FIXTURES.is_dir() and not missing_fixtures_allowed():
        raise pytest.UsageError(
            f"test fixtures not found at {FIXTURES}: put the shared folder beside the repository "
            f"(../shared/fixtures) or set WYOMING_LINA_FIXTURES; to run only the tests that need "
            f"none, set {ALLOW_MISSING_ENV}=1 (the others are then skipped)"
        )


def pytest_report_header(config):
    return f"fixtures: {FIXTURES} ({'present' if FIXTURES.is_dir() else 'MISSING'})"


def fixture_path(*parts: str) -> Path:
    """Path of a shared fixture file; a missing one fails the test (skips it only when allowed)."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        message = f"fixture missing: {path}"
        if missing_fixtures_allowed():
            pytest.skip(message)
        pytest.fail(message)
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
