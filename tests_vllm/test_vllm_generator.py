"""The vLLM backend against the transformers engine (the hf backend), for real on vLLM's CPU build.

Greedy 2-attempt episodes must be token-identical: the same prompts, the same sampled tokens, attempt
2 continuing attempt 1's exact token stream; with the base model and with a LoRA adapter. Random tiny
models rarely say EOS, so turns also end at a token that stops them at different steps (as in
tests/test_engine.py). Sampled episodes must repeat under the same seed and differ under another.
"""

from __future__ import annotations

import pytest
import torch

from harness.method import get_method
from harness.models import load_model
from harness.rollout import EngineGenerator, run_episodes
from harness.sampling import SamplingParams
from harness.task import get_task

MAX_NEW = 20


@pytest.fixture(scope="module")
def items(data_dir):
    return get_task("gsm8k").load("test", data_dir)[:6]


@pytest.fixture(scope="module")
def hf(wide_model):
    return load_model(str(wide_model), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def adapter(hf, tmp_path_factory):
    """A peft LoRA adapter with nonzero B (peft's default init is a no-op), saved as safetensors."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    base = load_model(str(hf.path), dtype="float32", device="cpu").model
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.2)
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    return folder, model.eval()


@pytest.fixture(scope="module")
def stop(hf, items):
    """A token that greedy text holds at many different steps: ending turns there too exercises EOS."""
    chats = [get_task("gsm8k").prompt(item) for item in items]
    out = EngineGenerator(hf.model, hf.tokenizer, 8).generate(chats, SamplingParams(max_new_tokens=MAX_NEW))
    streams = [c.token_ids for (c,) in out]
    return max(sorted({t for s in streams for t in s}),
               key=lambda t: len({s.index(t) if t in s else None for s in streams} - {0}))


@pytest.fixture(scope="module")
def engine(hf, stop):
    from harness.rollout.vllm_generator import VLLMGenerator, VLLMSettings

    eos = EngineGenerator(hf.model, hf.tokenizer, 8).eos_ids() + [stop]
    return VLLMGenerator(hf.path, hf.tokenizer, VLLMSettings(dtype="float32", enable_lora=True, max_lora_rank=8),
                         eos_ids=eos)


def _hf_generator(model, tokenizer, stop):
    generator = EngineGenerator(model, tokenizer, 4)
    ids = generator.eos_ids() + [stop]
    generator.eos_ids = lambda: ids
    return generator


def _episodes(generator, items, pool, method="base", temperature=0.0, seed=0):
    params = SamplingParams(temperature=temperature, top_p=1.0 if temperature == 0 else 0.9, max_new_tokens=MAX_NEW,
                            seed=seed)
    return run_episodes(get_task("gsm8k"), get_method(method), items, generator, params, 2, pool)


def _streams(episodes):
    return [[(s.prompt_ids, s.token_ids, s.finished) for s in e.steps] for e in episodes]


def _check_continuation(episodes):
    for e in episodes:
        first, second = e.steps[0], e.steps[1]
        assert second.prompt_ids[: len(first.prompt_ids) + len(first.token_ids)] == first.prompt_ids + first.token_ids


@pytest.mark.parametrize("method", ["base", "self-refine"])
def test_greedy_episodes_token_identical_to_hf(engine, hf, stop, items, pool, method):
    engine.set_adapter(None, 0)
    expected = _episodes(_hf_generator(hf.model, hf.tokenizer, stop), items, pool, method)
    got = _episodes(engine, items, pool, method)
    assert _streams(got) == _streams(expected)
    assert [[s.text for s in e.steps] for e in got] == [[s.text for s in e.steps] for e in expected]
    assert {s.finished for e in got for s in e.steps} == {True, False}  # both endings were exercised
    if method == "base":
        _check_continuation(got)


def test_greedy_episodes_with_lora_adapter_token_identical_to_hf_peft(engine, hf, adapter, stop, items, pool):
    folder, peft_model = adapter
    engine.set_adapter(folder, 1)
    try:
        got = _episodes(engine, items, pool)
    finally:
        engine.set_adapter(None, 0)
    expected = _episodes(_hf_generator(peft_model, hf.tokenizer, stop), items, pool)
    base = _episodes(engine, items, pool)
    assert _streams(got) == _streams(expected)
    assert _streams(got) != _streams(base)  # the adapter was in use
    assert engine.last_stats["requests"] == len(items) * 2


def test_sampled_episodes_repeat_with_the_same_seed(engine, items, pool):
    engine.set_adapter(None, 0)
    first = _episodes(engine, items, pool, temperature=1.0, seed=3)
    again = _episodes(engine, items, pool, temperature=1.0, seed=3)
    other = _episodes(engine, items, pool, temperature=1.0, seed=4)
    assert _streams(first) == _streams(again)
    assert _streams(first) != _streams(other)
    _check_continuation(first)


def test_turn_two_reuses_turn_one_prefix_cache(engine, items, pool):
    engine.set_adapter(None, 0)
    engine.llm.reset_prefix_cache()
    _episodes(engine, items, pool)
    stats = engine.last_stats
    assert stats["cached_tokens"] > 0, stats
