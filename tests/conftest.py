"""Shared test helpers: where the real assets live (skipped with a reason when absent)."""

import os
from pathlib import Path

import pytest

ASSETS = Path(os.environ.get("ONNXPRUNE_ASSETS", Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"))


@pytest.fixture(scope="session")
def assets() -> Path:
    """The read-only shared assets folder; tests using it skip when it is not there."""
    if not ASSETS.is_dir():
        pytest.skip(f"shared assets not found at {ASSETS} (set ONNXPRUNE_ASSETS)")
    return ASSETS
