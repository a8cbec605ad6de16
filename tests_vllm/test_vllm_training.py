"""Training rollouts through vLLM: after a policy update the next rollout samples from the new adapter
(changed weights give changed samples), the version moves, and the trainer's log-probs of the sampled
tokens match the engine's (the off-policy gap is ~0 when in sync, large when the engine is stale)."""

from __future__ import annotations

import pytest
import torch

from harness.method import get_method
from harness.models import load_model
from harness.rollout import run_episodes
from harness.sampling import SamplingParams
from harness.task import get_task
from harness.training.config import LoraSettings
from harness.lora import attach_lora


@pytest.fixture(scope="module")
def setup(wide_model, tmp_path_factory, data_dir):
    from harness.training.policy_rollouts import PolicyVLLMGenerator
    from harness.rollout.vllm_generator import VLLMSettings

    loaded = load_model(str(wide_model), dtype="float32", device="cpu")
    policy = attach_lora(loaded.model, LoraSettings(rank=8, alpha=16), seed=0).eval()
    generator = PolicyVLLMGenerator(loaded.path, loaded.tokenizer, VLLMSettings(dtype="float32", enable_lora=True,
                                    max_lora_rank=8), policy, tmp_path_factory.mktemp("adapters"))
    items = get_task("gsm8k").load("test", data_dir)[:4]
    return generator, policy, items


def _sample(generator, items, pool):
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=5)
    episodes = run_episodes(get_task("gsm8k"), get_method("base"), items, generator, params, 2, pool)
    return [[s.token_ids for s in e.steps] for e in episodes]


def _perturb(policy, scale: float) -> None:
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * scale)


def test_updates_reach_the_engine_and_the_gap_is_logged(setup, pool):
    generator, policy, items = setup
    first = _sample(generator, items, pool)
    assert generator.policy_version == 0 and (generator.folder / "v0" / "adapter_model.safetensors").is_file()
    logs = generator.update_policy(policy, 1)
    assert logs["policy_version"] == 0 and 0 <= logs["logprob_gap"] < 1e-3, logs
    assert _sample(generator, items, pool) == first  # same weights, same seeds: same samples

    _perturb(policy, 0.5)
    generator.update_policy(policy, 2)
    changed = _sample(generator, items, pool)
    assert changed != first  # the new adapter is in use
    assert not (generator.folder / "v0").exists() and generator.policy_version == 2
    logs = generator.update_policy(policy, 3)
    assert logs["policy_version"] == 2 and logs["logprob_gap"] < 1e-3, logs


def test_a_stale_engine_shows_in_the_gap(setup, pool):
    generator, policy, items = setup
    generator.update_policy(policy, 10)
    _sample(generator, items, pool)
    generator.update_policy(policy, 11)  # reset the gap; the engine now holds version 10
    generator.pending_version = None  # simulate a missed sync: the trainer moves on, the engine does not
    _perturb(policy, 0.5)
    _sample(generator, items, pool)
    logs = generator.update_policy(policy, 12)
    assert logs["logprob_gap"] > 1e-2, logs


def test_full_fine_tuning_with_vllm_is_refused():
    from harness.errors import HarnessError
    from harness.training.config import TrainConfig

    with pytest.raises(HarnessError, match="LoRA policies only"):
        TrainConfig(backend="vllm", lora=LoraSettings(enabled=False)).validate()
    TrainConfig(backend="vllm").validate()  # LoRA (the default): fine
