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


def test_auto_is_hf_without_vllm_for_models_that_are_not_gguf():
    assert resolve_backend("auto", "cpu") == "hf"
    assert resolve_backend("auto", "cpu", "tiny-random") == "hf"
    assert resolve_backend("hf", "cpu", "embedded") == "hf"


@pytest.mark.parametrize("native_bf16, installed, model, expected", [
    (False, True, "embedded", "llamacpp"),  # hf would run float32: llama.cpp on the GGUF as it ships
    (False, True, "/models/q.gguf", "llamacpp"),
    (True, True, "embedded", "hf"),  # bf16 native: hf in bf16 measured 2.1x llama.cpp here
    (False, False, "embedded", "hf"),  # llama.cpp not installed
    (False, True, "tiny-random", "hf"),  # not a GGUF: no conversion behind the user's back
])
def test_auto_on_cpu_picks_the_faster_backend(monkeypatch, native_bf16, installed, model, expected):
    from harness import models
    from harness.rollout import llamacpp_lib

    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.delenv(models.BF16_AUTO_ENV, raising=False)
    monkeypatch.setattr(llamacpp_lib, "llamacpp_installed", lambda: installed)
    assert resolve_backend("auto", "cpu", model) == expected


@pytest.mark.parametrize("backend", ["auto", "hf"])
def test_hf_runs_keep_their_folders(backend):
    # The embedded model's run under auto is a llama.cpp run where llama.cpp is installed (its own id):
    # the hf identity is checked with --backend hf for it.
    configs = [EvalConfig(backend="hf"),
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


def test_gradient_checkpointing_gives_the_same_lora_gradients():
    """Activations recomputed in the backward pass, not kept: the same loss and LoRA gradients."""
    import torch

    from harness.models import load_model
    from harness.training.config import LoraSettings
    from harness.lora import attach_lora
    from harness.training.policy import enable_gradient_checkpointing

    grads = []
    for checkpointing in (False, True):
        loaded = load_model("tiny-random", dtype="float32", device="cpu")
        policy = attach_lora(loaded.model, LoraSettings(rank=4, alpha=8), seed=0)
        with torch.no_grad():  # nonzero B, so every LoRA matrix gets a gradient
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        if checkpointing:
            enable_gradient_checkpointing(policy)
            assert policy.get_base_model().is_gradient_checkpointing
        ids = torch.tensor([loaded.tokenizer("12 + 30 = 42, so the answer is 42")["input_ids"]])
        loss = policy(input_ids=ids, labels=ids).loss
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}))
    (loss_off, off), (loss_on, on) = grads
    assert loss_on == pytest.approx(loss_off, rel=1e-6) and off.keys() == on.keys() and off
    for name in off:
        torch.testing.assert_close(on[name], off[name], rtol=1e-5, atol=1e-7)
