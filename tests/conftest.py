"""Shared fixtures.

``shared_data`` points at the small real recordings in ``../shared/data`` (or ``$PHYSIOFM_SHARED_DATA``).
Outside CI a missing folder skips the tests that need it; in CI (``CI`` set) it fails them,
so a missing dataset can never hide behind a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_data_dir() -> Path:
    env = os.environ.get("PHYSIOFM_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data_dir()
    if not (path / "README.md").is_file():
        message = f"real sample data not found at {path} (set PHYSIOFM_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
