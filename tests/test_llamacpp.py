"""The llama.cpp backend against the hf decode engine, on a tiny random model converted to an f32 GGUF.

The model's weights are drawn wide (as in test_engine) so greedy text varies by prompt and step, and a
frequent token ends turns too (random models rarely say EOS), so sequences end at different steps.
The KV cache is f32 and flash attention off here (kv_type="f32", flash_attn=False): with f16 keys and
values, or llama.cpp's CPU flash-attention kernel (which rounds through f16), a random model's
near-tied logits flip a greedy argmax (seen: a top-2 gap of 0.0075 at step 6 of one prompt). With f32
and the plain attention path the two backends agree token for token: tolerance zero, on these prompts.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

import torch  # noqa: E402

from harness.method import get_method  # noqa: E402
from harness.rollout import EngineGenerator, run_episodes  # noqa: E402
from harness.sampling import SamplingParams  # noqa: E402
from harness.task import get_task  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(loaded hf model with wide weights, its f32 GGUF path)."""
    from wide_models import save_wide_model

    from harness.gguf_export import convert_to_gguf

    folder = tmp_path_factory.mktemp("tiny-wide")
    loaded = save_wide_model("tiny-random", folder)
    gguf = convert_to_gguf(folder, folder / "model-f32.gguf", "f32")
    return loaded, gguf


@pytest.fixture(scope="module")
def items(data_dir):
    return get_task("gsm8k").load("test", data_dir)[:6]


@pytest.fixture(scope="module")
def stop(tiny, items) -> int:
    """A token that ends the hf engine's greedy rows at many different steps."""
    loaded, _ = tiny
    chats = [get_task("gsm8k").prompt(item) for item in items]
    out = EngineGenerator(loaded.model, loaded.tokenizer, 8).generate(chats, SamplingParams(max_new_tokens=24))
    streams = [c.token_ids for (c,) in out]

    def spread(token: int) -> int:
        return len({s.index(token) if token in s else None for s in streams} - {0})

    return max(sorted({t for s in streams for t in s}), key=spread)


def _llama(tiny, stop: int | None = None, parallel: int = 8, **kwargs):
    from harness.rollout.llamacpp_generator import LlamaCppGenerator

    loaded, gguf = tiny
    eos = [loaded.tokenizer.eos_token_id] + ([stop] if stop is not None else [])
    return LlamaCppGenerator(gguf, loaded.tokenizer, eos, parallel=parallel, kv_type="f32", flash_attn=False, **kwargs)


def _engine(tiny, stop: int | None = None, rows: int = 8):
    loaded, _ = tiny
    engine = EngineGenerator(loaded.model, loaded.tokenizer, rows)
    if stop is not None:
        ids = engine.eos_ids() + [stop]
        engine.eos_ids = lambda: ids
    return engine


def _streams(episodes):
    return [[(s.token_ids, s.finished, s.completion_tokens, s.text) for s in e.steps] for e in episodes]


def test_greedy_episodes_equal_hf_engine_and_reuse_attempt_1(tiny, stop, items, pool):
    task, params = get_task("gsm8k"), SamplingParams(max_new_tokens=20)
    hf = run_episodes(task, get_method("base"), items, _engine(tiny, stop), params, 2, pool)
    llama = _llama(tiny, stop)
    fast = run_episodes(task, get_method("base"), items, llama, params, 2, pool)
    assert _streams(fast) == _streams(hf)
    steps = [s for e in hf for s in e.steps]
    assert any(s.finished for s in steps) and any(not s.finished for s in steps)  # EOS and max_new_tokens both
    assert len({s.completion_tokens for s in steps}) > 2  # sequences really ended at different steps
    # Attempt 2 evaluated only its new tail: attempt 1's prompt and sampled tokens came from the cache.
    stats = llama.last_stats
    attempt1 = sum(e.steps[0].prompt_tokens + len(e.steps[0].token_ids) for e in fast)
    assert stats["requests"] == 2 * len(items)
    assert stats["cached_tokens"] >= attempt1 - len(items)


@pytest.mark.parametrize("unified", [False, True], ids=["stream-per-sequence", "unified-cache"])
def test_many_parallel_sequences_equal_one_at_a_time(tiny, stop, items, unified):
    chats = [get_task("gsm8k").prompt(item) for item in items] * 2
    params = SamplingParams(max_new_tokens=24)
    one = _llama(tiny, stop, parallel=1).generate(chats, params)
    many = _llama(tiny, stop, parallel=12, kv_unified=unified).generate(chats, params)
    assert [c.token_ids for (c,) in many] == [c.token_ids for (c,) in one]


@pytest.mark.parametrize("unified", [False, True], ids=["stream-per-sequence", "unified-cache"])
def test_prompts_sharing_part_of_a_held_sequence_reuse_its_cells(tiny, stop, items, unified):
    """Two prompts that share only a prefix of a finished sequence: the first takes the sequence over
    (its cells past the prefix dropped), the second copies the first's cells while it runs (across
    streams llama.cpp copies whole sequences, then the tail is dropped). Both equal the hf engine."""
    loaded, _ = tiny
    llama = _llama(tiny, stop, parallel=4, kv_unified=unified)
    ids = llama.encode(get_task("gsm8k").prompt(items[0]))
    (first,) = _run(llama, [_job(0, ids)], SamplingParams(max_new_tokens=8))[0]
    held = ids + list(first.token_ids)
    cut = len(ids) + 3  # inside the sampled tokens: a partial match of the held sequence
    prompts = [held[:cut] + [11, 12, 13], held[:cut] + [21, 22]]
    out = _run(llama, [_job(k, p) for k, p in enumerate(prompts)], SamplingParams(max_new_tokens=8))
    assert llama.last_stats["cached_tokens"] == 2 * cut
    expected = [_hf_greedy(loaded, p, 8, _engine(tiny, stop).eos_ids()) for p in prompts]
    assert [out[k][0].token_ids for k in range(2)] == expected


def _run(generator, jobs, params) -> dict:
    out = {}
    generator.stream(jobs, params, lambda key, completions, seconds: out.setdefault(key, completions) and [])
    return out


def _hf_greedy(loaded, ids: list[int], n: int, eos: list[int]) -> tuple[int, ...]:
    """Greedy tokens of the hf model after `ids`, up to n or an EOS (included, as the engines stop there)."""
    tokens: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            logits = loaded.model(torch.tensor([ids + tokens])).logits[0, -1]
            tokens.append(int(logits.argmax()))
            if tokens[-1] in eos:
                tokens.pop()
                break
    return tuple(tokens)


def test_sampled_episodes_repeat_and_do_not_depend_on_the_batch(tiny, stop, items, pool):
    task = get_task("gsm8k")
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=16, seed=7)
    method = get_method("base")
    llama = _llama(tiny, stop, parallel=6)
    first = _streams(run_episodes(task, method, items, llama, params, 2, pool))
    again = _streams(run_episodes(task, method, items, llama, params, 2, pool))  # cache warm now
    alone = _streams(run_episodes(task, method, items[2:4], _llama(tiny, stop, parallel=1), params, 2, pool))
    assert again == first
    assert alone == first[2:4]
    other = _streams(run_episodes(task, method, items, llama, SamplingParams(
        temperature=1.0, top_p=0.9, max_new_tokens=16, seed=8), 2, pool))
    assert other != first  # the seed matters
    texts = {s[0] for e in first for s in e}
    assert len(texts) > len(items)  # really sampled (not one repeated text)


def test_samples_of_one_prompt_share_its_evaluation(tiny, stop, items):
    chats = [get_task("gsm8k").prompt(item) for item in items[:3]]
    llama = _llama(tiny, stop, parallel=8)
    greedy = llama.generate(chats, SamplingParams(max_new_tokens=12, n=3))
    assert all(len({c.token_ids for c in cs}) == 1 for cs in greedy)
    hf = _engine(tiny, stop).generate(chats, SamplingParams(max_new_tokens=12))
    assert [cs[0].token_ids for cs in greedy] == [c.token_ids for (c,) in hf]
    sampled = llama.generate(chats, SamplingParams(temperature=1.0, max_new_tokens=12, n=3, seed=1))
    assert all(len({c.token_ids for c in cs}) > 1 for cs in sampled)  # each sample its own seed
    assert llama.last_stats["requests"] == 9


def test_engine_logprobs_are_the_raw_log_softmax(tiny, items):
    loaded, _ = tiny
    chat = get_task("gsm8k").prompt(items[0])
    llama = _llama(tiny)
    ids = llama.encode(chat)
    out = {}
    llama.stream([_job(0, ids)], SamplingParams(temperature=1.0, max_new_tokens=8, seed=3),
                 lambda key, completions, seconds: out.setdefault(key, completions) and [], logprobs=True)
    (completion,) = out[0]
    assert len(completion.engine_logprobs) == len(completion.token_ids) > 0
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids + list(completion.token_ids)])).logits[0].float()
    expected = torch.log_softmax(logits[len(ids) - 1 : -1], -1).gather(1, torch.tensor(completion.token_ids)[:, None])
    assert torch.allclose(torch.tensor(completion.engine_logprobs), expected.squeeze(1), atol=1e-3)


def test_adapter_changes_outputs_and_base_comes_back(tiny, items, tmp_path):
    from harness.gguf_lora import export_lora_gguf
    from harness.lora import LoraSettings, attach_lora

    loaded, _ = tiny
    chats = [get_task("gsm8k").prompt(item) for item in items[:3]]
    params = SamplingParams(max_new_tokens=12)
    llama = _llama(tiny)
    base = [c.token_ids for (c,) in llama.generate(chats, params)]
    import copy

    policy = attach_lora(copy.deepcopy(loaded.model), LoraSettings(rank=4, alpha=8), seed=0)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    policy.eval()
    adapter = export_lora_gguf(policy, tmp_path / "adapter.gguf")
    llama.set_adapter(adapter, 1)
    tuned = [c.token_ids for (c,) in llama.generate(chats, params)]
    assert llama.last_stats["cached_tokens"] == 0  # nothing computed under the base model was reused
    expected = [c.token_ids for (c,) in EngineGenerator(policy, loaded.tokenizer, 4).generate(chats, params)]
    assert tuned == expected and tuned != base
    llama.set_adapter(None, 2)
    assert [c.token_ids for (c,) in llama.generate(chats, params)] == base


def _job(key, ids):
    from harness.rollout.engine import Job

    return Job(key, list(ids), [0])


def test_backend_is_part_of_a_runs_identity_and_refuses_checkpoints(tmp_path):
    from harness.compare import CompareConfig
    from harness.errors import HarnessError
    from harness.evaluate import EvalConfig
    from harness.rollout.backend import resolve_backend

    assert resolve_backend("llamacpp", "cpu") == "llamacpp"
    assert resolve_backend("auto", "cpu") != "llamacpp"  # auto is unchanged
    llama, hf = EvalConfig(backend="llamacpp"), EvalConfig(backend="hf")
    assert llama.identity()["backend"] == "llamacpp" and llama.run_dir() != hf.run_dir()
    assert CompareConfig(backend="llamacpp").identity()["backend"] == "llamacpp"
    with pytest.raises(HarnessError, match="llamacpp does not evaluate training checkpoints"):
        EvalConfig(backend="llamacpp", checkpoint=str(tmp_path)).validate()


def test_llamacpp_not_installed_is_one_line(monkeypatch):
    from harness.errors import HarnessError
    from harness.rollout import llamacpp_lib
    from harness.rollout.backend import resolve_backend

    monkeypatch.setattr(llamacpp_lib, "llamacpp_installed", lambda: False)
    with pytest.raises(HarnessError, match=r"pip install 'selfcorrect-harness\[llamacpp\]'") as error:
        resolve_backend("llamacpp", "cpu")
    assert "\n" not in str(error.value)


def test_eval_through_llamacpp_records_the_gguf_it_ran(tiny, data_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from harness.cli import app

    _, gguf = tiny
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["eval", "--backend", "llamacpp", "--model", str(gguf.parent), "--limit", "2",
                                      "--max-new-tokens", "6", "--data-dir", str(data_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output[-2000:]
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2
    model = json.loads((out / "manifest.json").read_text())["model"]
    assert model["gguf"].endswith(".gguf") and "F32" in model["gguf_type"], model
