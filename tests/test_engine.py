"""The decode engine against the plain path (batched `model.generate`, full re-prefill every turn).

Rows end at different steps only if something ends them: random tiny models rarely say EOS, so the
tests also end a turn at a token that stops the rows at many different steps (found from the plain
path's own output).
"""

from __future__ import annotations

import pytest
import torch

from harness.method import get_method
from harness.models import load_model
from harness.rollout import EngineGenerator, HFGenerator, run_episodes
from harness.sampling import SamplingParams
from harness.rollout.kvcache import KVStash
from harness.task import get_task
from wide_models import widen


@pytest.fixture(scope="module", params=["tiny-random", "tiny-random-llama"])
def tiny(request):
    """A tiny model with weights drawn wide enough that greedy text varies by prompt and step (at the
    stored init every row repeats one token, which would make any two paths agree)."""
    return widen(load_model(request.param, dtype="float32"))


@pytest.fixture(scope="module")
def items(data_dir):
    return get_task("gsm8k").load("test", data_dir)[:7]


def _with_stop(generator, stop: int | None):
    """The generator, ending turns at `stop` too (as if the model said EOS there)."""
    if stop is not None:
        ids = generator.eos_ids() + [stop]
        generator.eos_ids = lambda: ids
    return generator


def _frequent_token(tiny, items) -> int:
    chats = [get_task("gsm8k").prompt(item) for item in items]
    out = HFGenerator(tiny.model, tiny.tokenizer, 8).generate(chats, SamplingParams(max_new_tokens=24))
    streams = [c.token_ids for (c,) in out]

    def spread(token: int) -> int:  # how many different steps it would end the rows at
        return len({s.index(token) if token in s else None for s in streams} - {0})

    return max(sorted({t for s in streams for t in s}), key=spread)


def test_engine_greedy_equals_batched_generate_with_rows_ending_early(tiny, items):
    stop = _frequent_token(tiny, items)
    chats = [get_task("gsm8k").prompt(item) for item in items]
    params = SamplingParams(max_new_tokens=24)
    plain = _with_stop(HFGenerator(tiny.model, tiny.tokenizer, 3), stop).generate(chats, params)
    engine = _with_stop(EngineGenerator(tiny.model, tiny.tokenizer, 2), stop)
    fast = engine.generate(chats, params)
    assert [c.token_ids for (c,) in fast] == [c.token_ids for (c,) in plain]
    assert [(c.finished, c.completion_tokens, c.text) for (c,) in fast] == \
        [(c.finished, c.completion_tokens, c.text) for (c,) in plain]
    lengths = {c.completion_tokens for (c,) in plain}
    assert len(lengths) > 1 and any(c.finished for (c,) in plain)  # rows really ended at different steps
    assert max(engine.last_stats.rows_per_step) == 2  # freed rows were refilled up to the limit


@pytest.mark.parametrize("method", ["base", "self-refine"])
def test_episodes_with_prefix_reuse_equal_full_reprefill(tiny, pool, items, method):
    stop = _frequent_token(tiny, items)
    task, params = get_task("gsm8k"), SamplingParams(max_new_tokens=20)
    plain = run_episodes(task, get_method(method), items, _with_stop(HFGenerator(tiny.model, tiny.tokenizer, 4), stop),
                         params, 3, pool)
    engine = _with_stop(EngineGenerator(tiny.model, tiny.tokenizer, 3), stop)
    fast = run_episodes(task, get_method(method), items, engine, params, 3, pool)
    for a, b in zip(plain, fast):
        assert [(s.kind, s.prompt_ids, s.token_ids, s.text, s.carried) for s in a.steps] == \
            [(s.kind, s.prompt_ids, s.token_ids, s.text, s.carried) for s in b.steps]
        assert a.correct == b.correct
    stats = engine.last_stats
    later = sum(s.prompt_tokens for e in fast for s in e.steps[1:] if not s.carried)
    # Later steps ran only their tails: most of their prompt tokens came from earlier streams.
    assert stats.reused_tokens > later / 2
    assert stats.prefill_tokens + stats.reused_tokens == sum(s.prompt_tokens for e in fast for s in e.steps if not s.carried)


def test_prefix_reuse_off_gives_the_same_tokens(tiny, pool, items):
    task, params = get_task("gsm8k"), SamplingParams(max_new_tokens=12)
    reuse = EngineGenerator(tiny.model, tiny.tokenizer, 4)
    fresh = EngineGenerator(tiny.model, tiny.tokenizer, 4, stash_bytes=0)
    a = run_episodes(task, get_method("base"), items[:4], reuse, params, 2, pool)
    b = run_episodes(task, get_method("base"), items[:4], fresh, params, 2, pool)
    assert fresh.last_stats.reused_tokens == 0 and reuse.last_stats.reused_tokens > 0
    assert [s.token_ids for e in a for s in e.steps] == [s.token_ids for e in b for s in e.steps]


def test_sampling_is_seeded_per_request_not_per_batch(tiny, pool, items):
    task = get_task("gsm8k")
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=3)
    runs = [run_episodes(task, get_method("base"), items[:4], EngineGenerator(tiny.model, tiny.tokenizer, rows),
                         params, 2, pool) for rows in (1, 4, 4)]
    tokens = [[s.token_ids for e in run for s in e.steps] for run in runs]
    assert tokens[0] == tokens[1] == tokens[2]  # batch size and rerun change nothing
    alone = run_episodes(task, get_method("base"), items[2:3], EngineGenerator(tiny.model, tiny.tokenizer, 4),
                         params, 2, pool)
    assert [s.token_ids for s in alone[0].steps] == tokens[0][4:6]  # nor do the other problems
    other = run_episodes(task, get_method("base"), items[:4], EngineGenerator(tiny.model, tiny.tokenizer, 4),
                         SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=4), 2, pool)
    assert [s.token_ids for e in other for s in e.steps] != tokens[0]
    repeats = run_episodes(task, get_method("base"), [items[0]] * 3, EngineGenerator(tiny.model, tiny.tokenizer, 4),
                           params, 2, pool)
    assert len({e.steps[0].token_ids for e in repeats}) == 3  # copies of one problem sample differently


def test_n_samples_per_prompt(tiny, items):
    chat = [get_task("gsm8k").prompt(items[0])]
    gen = EngineGenerator(tiny.model, tiny.tokenizer, 4)
    a = gen.generate(chat, SamplingParams(temperature=1.0, max_new_tokens=8, n=3, seed=7))[0]
    b = gen.generate(chat, SamplingParams(temperature=1.0, max_new_tokens=8, n=3, seed=7))[0]
    assert len(a) == 3 and a == b and len({x.token_ids for x in a}) > 1
    greedy = gen.generate(chat, SamplingParams(max_new_tokens=8, n=2))[0]
    assert greedy[0] == greedy[1]


def test_stash_keeps_the_longest_prefix_within_its_budget():
    def cache(n):
        return ((torch.zeros(1, 1, n, 2), torch.zeros(1, 1, n, 2)),)

    per_token = 2 * 2 * 4  # keys + values, 2 floats each
    stash = KVStash(max_bytes=10 * per_token)
    stash.put((1, 2, 3), cache(3))
    stash.put((1, 2, 3, 4, 5), cache(5))
    n, found = stash.longest_prefix([1, 2, 3, 4, 9])
    assert n == 4 and found[0][0].shape[2] == 4
    n, _ = stash.longest_prefix([1, 2, 3, 4, 5])  # one token must be left to run
    assert n == 4
    assert stash.longest_prefix([7, 1, 2]) == (0, None)
    stash.put((6, 6, 6, 6), cache(4))  # over budget: the least recently used stream, (1, 2, 3), goes
    assert len(stash) == 2 and stash.bytes == 9 * per_token
    assert stash.longest_prefix([1, 2, 3, 0])[0] == 3 and stash.longest_prefix([6, 6, 0])[0] == 2


def test_rows_follow_free_memory_and_an_explicit_batch_size_wins(tiny, monkeypatch):
    from harness.rollout import memory

    per_row = memory.kv_bytes_per_token(tiny.model) * memory.ROW_TOKENS
    assert per_row == 2 * tiny.model.config.num_hidden_layers * tiny.model.config.num_key_value_heads * \
        (tiny.model.config.hidden_size // tiny.model.config.num_attention_heads) * 4 * memory.ROW_TOKENS
    monkeypatch.setattr(memory, "free_bytes", lambda device: 4 * 5 * per_row)  # a quarter holds 5 rows
    assert EngineGenerator(tiny.model, tiny.tokenizer).batch_size == 5
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10**15)
    assert EngineGenerator(tiny.model, tiny.tokenizer).batch_size == memory.CPU_MAX_ROWS
    assert EngineGenerator(tiny.model, tiny.tokenizer, 3).batch_size == 3
