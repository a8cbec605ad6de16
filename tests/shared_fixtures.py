"""Fixtures both test trees use (tests/ and tests_vllm/, whose conftest.py files import them from here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared offline data (../shared/data beside the checkout, or HARNESS_DATA_DIR)."""
    path = Path(os.environ.get("HARNESS_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (path / "gsm8k" / "test.jsonl").is_file():
        pytest.fail(f"offline data not found at {path}; set HARNESS_DATA_DIR")
    return path


@pytest.fixture(scope="module")
def pool():
    """One grading worker shared by a test module's rollouts."""
    from harness.grading import GradingPool

    with GradingPool(workers=1) as p:
        yield p
