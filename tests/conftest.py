"""Shared fixtures.

Real public data lives in ``../shared/data/real`` beside the checkout (read in place, never
copied). Tests that need it skip when it is absent (a user's clone) but fail when ``CI`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO_ROOT.parent / "shared" / "data" / "real"


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"real test data missing in CI: {path}")
        pytest.skip(f"real test data not available: {path}")
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Root of ``../shared/data/real`` (skips outside CI when absent)."""
    return _require(SHARED_REAL)


@pytest.fixture(scope="session")
def real_ecg_dir(real_data: Path) -> Path:
    """``../shared/data/real/ecg``."""
    return _require(real_data / "ecg")


@pytest.fixture(scope="session")
def real_cxr_dir(real_data: Path) -> Path:
    """``../shared/data/real/cxr``."""
    return _require(real_data / "cxr")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return REPO_ROOT
