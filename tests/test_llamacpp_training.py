"""Training rollouts through llama.cpp: after each optimizer step the policy's LoRA reaches the engine as
a GGUF adapter (no reload of the base), the next rollout samples from it, the version and the off-policy
gap are logged, and the trainer weighs engine samples by truncated importance weights.

Tiny random model with wide weights, converted to an f32 GGUF; f32 KV cache and plain attention in the
generator-level tests, so trainer and engine agree on greedy tokens and on log-probs to float32 rounding."""

from __future__ import annotations

import copy
import json
import math

import pytest

pytest.importorskip("llama_cpp")

import torch  # noqa: E402

from harness.method import get_method  # noqa: E402
from harness.rollout import EngineGenerator, run_episodes  # noqa: E402
from harness.sampling import SamplingParams  # noqa: E402
from harness.task import get_task  # noqa: E402


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """(loaded hf model with wide weights, its folder, its f32 GGUF)."""
    from wide_models import save_wide_model

    from harness.gguf_export import convert_to_gguf

    folder = tmp_path_factory.mktemp("tiny-wide-train")
    loaded = save_wide_model("tiny-random", folder)
    return loaded, folder, convert_to_gguf(folder, folder / "model-f32.gguf", "f32")


@pytest.fixture(scope="module")
def items(data_dir):
    return get_task("gsm8k").load("test", data_dir)[:4]


def _policy(loaded):
    from harness.lora import LoraSettings, attach_lora

    return attach_lora(copy.deepcopy(loaded.model), LoraSettings(rank=4, alpha=8), seed=0).eval()


def _perturb(policy, scale: float, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * scale)


def _episodes(generator, items, pool, temperature: float = 0.0):
    params = SamplingParams(temperature=temperature, max_new_tokens=10, seed=5)
    episodes = run_episodes(get_task("gsm8k"), get_method("base"), items, generator, params, 2, pool)
    return [[s.token_ids for s in e.steps] for e in episodes], episodes


def test_each_update_reaches_the_engine_as_a_gguf_adapter(wide, items, pool, tmp_path):
    from harness.training.policy_rollouts import PolicyLlamaCppGenerator

    loaded, _, gguf = wide
    policy = _policy(loaded)
    engine = PolicyLlamaCppGenerator(gguf, loaded.tokenizer, EngineGenerator(loaded.model, loaded.tokenizer, 1).eos_ids(),
                                     policy, tmp_path / "adapters", parallel=4, kv_type="f32", flash_attn=False)
    first, episodes = _episodes(engine, items, pool)
    assert engine.policy_version == 0 and (tmp_path / "adapters" / "v0" / "adapter.gguf").is_file()
    # the engine's log-prob of every sampled token travels on the steps, for the importance weights
    assert all(len(s.engine_logprobs) == len(s.token_ids) for e in episodes for s in e.steps)
    logs = engine.update_policy(policy, 1)
    assert logs["policy_version"] == 0 and 0 <= logs["logprob_gap"] < 1e-3, logs

    _perturb(policy, 0.5, seed=1)  # what an optimizer step does to the adapter
    engine.update_policy(policy, 2)
    changed, _ = _episodes(engine, items, pool)
    hf, _ = _episodes(EngineGenerator(policy, loaded.tokenizer, 4), items, pool)
    assert changed == hf and changed != first  # greedy: the engine samples exactly what the new policy would
    assert engine.policy_version == 2 and sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["v2"]
    logs = engine.update_policy(policy, 3)
    assert logs["policy_version"] == 2 and logs["logprob_gap"] < 1e-3, logs

    engine.pending_version = None  # a missed sync: the trainer moves on, the engine keeps version 2
    _perturb(policy, 0.5, seed=2)
    _episodes(engine, items, pool, temperature=1.0)
    assert engine.update_policy(policy, 4)["logprob_gap"] > 1e-2  # a stale engine shows in the gap


def test_truncated_importance_weights():
    from harness.training.losses import IMPORTANCE_CAP, truncated_importance_weights

    logp = torch.log(torch.tensor([[[0.5, 0.5, 0.9, 0.2, 0.3]]]))  # [K=1, E=1, T=5] trainer
    engine = torch.log(torch.tensor([[0.25, 0.5, 0.3, 0.4, 0.3]]))  # the engine's
    engine[0, 4] = float("nan")  # a token the engine gave no log-prob for (e.g. a sampled EOS)
    masks = torch.tensor([[[1.0, 1.0, 1.0, 1.0, 1.0]]])
    masks_one_off = masks.clone()
    masks_one_off[0, 0, 1] = 0.0
    weights, logs = truncated_importance_weights(logp, engine, masks_one_off)
    expected = [2.0, 0.0, min(0.9 / 0.3, IMPORTANCE_CAP), 0.5, 1.0]  # ratio, masked, capped at 2, ratio, no engine
    assert weights[0, 0].tolist() == pytest.approx(expected)
    assert logs["is_weight"] == pytest.approx(sum(expected) / 4) and logs["is_clipped"] == pytest.approx(2 / 4)
    on_policy, none = truncated_importance_weights(logp, None, masks)
    assert torch.equal(on_policy, torch.ones_like(masks)) and none == {}
    # the weight carries no gradient: the policy-gradient term stays w * grad log pi
    logp.requires_grad_(True)
    w, _ = truncated_importance_weights(logp, engine, masks)
    assert not w.requires_grad


def test_training_auto_never_picks_llamacpp_and_the_backend_joins_the_identity(monkeypatch):
    from harness.errors import HarnessError
    from harness.lora import LoraSettings
    from harness.rollout import backend
    from harness.training.config import TrainConfig
    from harness.training.policy_rollouts import training_backend

    monkeypatch.setenv("HARNESS_AUTO_BF16_CPU", "0")  # auto on this CPU would pick llama.cpp for evaluation
    assert backend.resolve_backend("auto", "cpu", "embedded") == "llamacpp"
    auto, llama = TrainConfig(backend="auto"), TrainConfig(backend="llamacpp")
    assert training_backend(auto) == "hf" and "backend" not in auto.identity()
    assert training_backend(llama) == "llamacpp" and llama.identity()["backend"] == "llamacpp"
    assert llama.run_dir() != auto.run_dir() and TrainConfig(backend="hf").run_dir() == auto.run_dir()
    with pytest.raises(HarnessError, match="LoRA policies only"):
        TrainConfig(backend="llamacpp", lora=LoraSettings(enabled=False)).validate()


@pytest.mark.slow
def test_train_score_with_llamacpp_rollouts(wide, data_dir, tmp_path):
    from harness.cli import app
    from typer.testing import CliRunner

    _, folder, _ = wide
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--method", "score", "--backend", "llamacpp", "--model", str(folder), "--max-steps", "3",
        "--preset", "cpu-tiny", "--set", "max_new_tokens=12", "--set", "lr=0.05", "--set", "dtype=float32",
        "--data-dir", str(data_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["policy_version"] for row in log] == [0, 1, 2]  # each step sampled from the previous step's adapter
    # The run's engine keeps llama.cpp's defaults (f16 KV cache): the gap is that rounding, not staleness.
    assert all(0 <= row["logprob_gap"] < 0.05 for row in log), [row["logprob_gap"] for row in log]
    assert all(0 < row["is_weight"] <= 2.0 and math.isfinite(row["is_weight"]) for row in log)
    assert sorted(p.name for p in (out / "rollout-adapter").iterdir()) == ["v2"]
    assert (out / "rollout-adapter" / "v2" / "adapter.gguf").is_file()
    assert "backend: llamacpp" in (out / "config.yaml").read_text()
    model = json.loads((out / "manifest.json").read_text())["model"]
    assert model["gguf"].endswith(".gguf") and "F32" in model["gguf_type"], model  # what the engine ran
