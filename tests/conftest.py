"""Shared fixtures: where the real test data lives, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FLOWHAWK_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real captures and logs (../shared/data); missing data fails, never skips."""
    assert SHARED_DATA.is_dir(), f"test data not found at {SHARED_DATA} (set FLOWHAWK_SHARED_DATA)"
    return SHARED_DATA
