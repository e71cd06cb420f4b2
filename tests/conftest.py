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
