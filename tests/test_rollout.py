"""The rollout core on a tiny model: conversation construction, batching, early stops."""

from __future__ import annotations

import pytest

from harness.method import Method, get_method
from harness.models import load_model
from harness.prompts import SCORE_CORRECTION, SCORE_SYSTEM
from harness.rollout import HFGenerator, run_episodes
from harness.sampling import SamplingParams
from harness.rollout.episode import Episode
from harness.task import get_task


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random")


@pytest.fixture(scope="module")
def items(data_dir):
    return get_task("gsm8k").load("test", data_dir)[:5]


def test_attempt_k_plus_1_answers_prompt_attempt_k_and_instruction(tiny, pool, items):
    task = get_task("gsm8k")
    generator = HFGenerator(tiny.model, tiny.tokenizer, batch_size=2)
    episodes = run_episodes(task, get_method("base"), items, generator, SamplingParams(max_new_tokens=12), 3, pool)
    for item, episode in zip(items, episodes):
        a1, a2, a3 = episode.attempts
        assert a1.messages == [{"role": "system", "content": SCORE_SYSTEM},
                               {"role": "user", "content": f"Problem:\n{item.question}"}]
        assert a2.messages == a1.messages + [{"role": "assistant", "content": a1.text},
                                             {"role": "user", "content": SCORE_CORRECTION}]
        assert a3.messages == a2.messages + [{"role": "assistant", "content": a2.text},
                                             {"role": "user", "content": SCORE_CORRECTION}]
        assert list(a1.prompt_ids) == generator.encode(a1.messages)
        for prev, step in ((a1, a2), (a2, a3)):
            # Token level: attempt k+1's prompt is attempt k's prompt, the tokens it sampled, then the
            # template's "<|im_end|>\n<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n".
            tail = tiny.tokenizer(f"<|im_end|>\n<|im_start|>user\n{SCORE_CORRECTION}<|im_end|>\n<|im_start|>assistant\n",
                                  add_special_tokens=False)["input_ids"]
            assert list(step.prompt_ids) == [*prev.prompt_ids, *prev.token_ids, *tail]
            assert step.prompt_tokens == len(step.prompt_ids)
        for step in episode.steps:
            assert 0 < step.completion_tokens <= 12 and step.grade is not None
            assert step.completion_tokens == len(step.token_ids) + step.finished
        record = episode.to_record()
        assert record["correct"] == [s.grade.correct for s in episode.attempts]
        # stored compactly: attempt k+1 keeps only the instruction, pointing at attempt k's conversation
        assert [s.get("shares") for s in record["steps"]] == [None, [0, 3], [1, 5]]
        assert [s["messages"] for s in record["steps"][1:]] == [[{"role": "user", "content": SCORE_CORRECTION}]] * 2
        assert [s.messages for s in Episode.from_record(record).steps] == [s.messages for s in episode.steps]


def test_batched_left_padded_greedy_equals_one_prompt_at_a_time(tiny, items):
    chats = [get_task("gsm8k").prompt(item) for item in items]
    params = SamplingParams(max_new_tokens=10)
    one_by_one = [HFGenerator(tiny.model, tiny.tokenizer, 1).generate([c], params)[0][0] for c in chats]
    batched = [c[0] for c in HFGenerator(tiny.model, tiny.tokenizer, 4).generate(chats, params)]
    assert [c.token_ids for c in batched] == [c.token_ids for c in one_by_one]
    assert len({len(c) for c in chats}) == 1 or len({c.prompt_tokens for c in batched}) > 1  # really padded


def test_sampling_gives_n_completions_and_is_seeded(tiny, items):
    chat = [get_task("gsm8k").prompt(items[0])]
    gen = HFGenerator(tiny.model, tiny.tokenizer, 4)
    a = gen.generate(chat, SamplingParams(temperature=1.0, max_new_tokens=8, n=3, seed=7))[0]
    b = gen.generate(chat, SamplingParams(temperature=1.0, max_new_tokens=8, n=3, seed=7))[0]
    c = gen.generate(chat, SamplingParams(temperature=1.0, max_new_tokens=8, n=3, seed=8))[0]
    assert len(a) == 3 and a == b and a != c
    assert len({x.token_ids for x in a}) > 1  # random weights at T=1: the samples differ


def test_a_method_that_stops_early_carries_its_last_attempt(tiny, pool, items):
    class OneShot(Method):
        def next_request(self, task, item, episode):
            return None

    task = get_task("gsm8k")
    generator = HFGenerator(tiny.model, tiny.tokenizer, 4)
    (episode,) = run_episodes(task, OneShot(), items[:1], generator, SamplingParams(max_new_tokens=6), 3, pool)
    first, second, third = episode.attempts
    assert second.carried and third.carried and not first.carried
    assert second.text == first.text and second.completion_tokens == 0


def test_system_prompt_and_instruction_are_overridable(tiny, pool, items):
    method = get_method("base", system_prompt="Be brief.", correction_instruction="Check again.")
    generator = HFGenerator(tiny.model, tiny.tokenizer, 4)
    (episode,) = run_episodes(get_task("gsm8k"), method, items[:1], generator, SamplingParams(max_new_tokens=4), 2, pool)
    assert episode.attempts[0].messages[0] == {"role": "system", "content": "Be brief."}
    assert episode.attempts[1].messages[-1] == {"role": "user", "content": "Check again."}
