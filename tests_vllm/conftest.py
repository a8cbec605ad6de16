"""Fixtures of the vLLM backend's tests (own environment: `make test-vllm`, .venv-vllm)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the shared fixtures and the wide-model helper live there

from shared_fixtures import data_dir, pool  # noqa: E402,F401

# vLLM's CPU build on a small machine: both cores, a 1 GiB KV cache, the engine in this process.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def wide_model(tmp_path_factory) -> Path:
    """tiny-random-s (head_dim 32: vLLM's CPU attention takes no less) with weights drawn wide enough
    that greedy text varies by prompt and step, saved as a model folder both backends load."""
    from wide_models import save_wide_model

    folder = tmp_path_factory.mktemp("wide-tiny-random-s")
    save_wide_model("tiny-random-s", folder)
    return folder
