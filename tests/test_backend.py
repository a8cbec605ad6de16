"""--backend in the main environment (vLLM is not installed here; its own tests run in .venv-vllm,
tests_vllm/): hf runs keep the identities they had before backends existed, auto means hf without
vLLM or a GPU, and asking for vllm where it is not installed is one line, exit 2, nothing written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.evaluate import EvalConfig
from harness.rollout.backend import resolve_backend
from harness.training.config import TrainConfig

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")

# Run folders these configurations had before --backend existed (computed on main at 116b2c5).
BEFORE = {"gsm8k-base-embedded-t2-4412d4ac", "math500-self-refine-tiny-random-t3-07fc7c26"}
TRAIN_BEFORE = "train-score-gsm8k-embedded-96af203d"


def test_auto_is_hf_without_vllm():
    assert resolve_backend("auto", "cpu") == "hf"
    assert resolve_backend("hf", "cpu") == "hf"


@pytest.mark.parametrize("backend", ["auto", "hf"])
def test_hf_runs_keep_their_folders(backend):
    configs = [EvalConfig(backend=backend),
               EvalConfig(task="math500", method="self-refine", model="tiny-random", turns=3, backend=backend)]
    assert {c.run_dir().name for c in configs} == BEFORE
    assert "backend" not in configs[0].identity()
    train = TrainConfig(backend=backend)
    assert Path(train.run_dir()).name == TRAIN_BEFORE
    assert {"backend", "gradient_checkpointing", "vllm_memory_share"}.isdisjoint(train.identity())
    assert Path(TrainConfig(gradient_checkpointing=True).run_dir()).name != TRAIN_BEFORE  # it changes a run


@pytest.mark.parametrize("command", [
    ["eval", "--model", "tiny-random", "--limit", "1", "--backend", "vllm"],
    ["compare", "--methods", "base", "--model", "tiny-random", "--limit", "1", "--backend", "vllm"],
    ["train", "--method", "score", "--preset", "cpu-tiny", "--backend", "vllm"],
])
def test_vllm_backend_without_vllm_is_one_line(command, tmp_path, monkeypatch, data_dir):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*command, "--data-dir", str(data_dir)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs vLLM" in lines[0] and "[vllm]" in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
