"""Diagnostics behind a Δ: edit ratios, answer changes, transitions, compute, paired McNemar against base,
checked on hand-made episodes whose values are worked out by hand below, and in `report`'s output."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from harness.report import report
from harness.diagnostics import (budget_note, compute, edit_ratio, episode_diagnostics, episodes_csv,
                                 paired_mcnemar_p, row_diagnostics, training_tokens)
from harness.model_size import parameter_count
from harness.rollout.episode import Episode, Step
from harness.task import Grade, Item

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"


def attempt(text: str, extracted: str | None, correct: bool, prompt: int = 10, completion: int = 5,
            seconds: float = 1.0, carried: bool = False) -> Step:
    return Step("attempt", [], text, prompt, completion, True, seconds, Grade(correct, extracted, "", 2), carried)


def episode(pid: str, *steps: Step) -> Episode:
    return Episode(Item(pid, "q", "a"), list(steps))


FEEDBACK = Step("feedback", [], "Verdict: correct", 30, 4, True, 0.5)

# (episode, edit ratios by hand, answer changed, transition)
EPISODES = [
    # copied verbatim: distance 0
    (episode("p1", attempt("The answer is 12.", "12", False), attempt("The answer is 12.", "12", False)),
     (0.0,), False, "i→i"),
    # "x = 3, so 6" -> "x = 4, so 8": 2 substitutions over 11 characters
    (episode("p2", attempt("x = 3, so 6", "6", False), attempt("x = 4, so 8", "8", True)), (2 / 11,), True, "i→c"),
    # "42" -> "24": both characters substituted, 2 / 2
    (episode("p3", attempt("42", "42", True), attempt("24", "24", False)), (1.0,), True, "c→i"),
    # Self-Refine style: a feedback step between, attempt 2 carried over unchanged (no prompt, no tokens)
    (episode("p4", attempt("Final: 7", "7", True), FEEDBACK,
             attempt("Final: 7", "7", True, prompt=0, completion=0, seconds=0.0, carried=True)), (0.0,), False, "c→c"),
    # no extraction: the texts decide; "don't" -> "do not" = insert " " and substitute "'" -> "o": 2 over 13
    (episode("p5", attempt("I don't know", None, False), attempt("I do not know", None, False)), (2 / 13,), True, "i→i"),
]
# "answer changed" compares answers, not spellings
ANSWER_FORMS = [
    # the same number written another way is the same answer: "20" -> "20.00", "1,200" -> "1200"
    (episode("p6", attempt("So 20", "20", True), attempt("So 20.00", "20.00", True)), (3 / 8,), False, "c→c"),
    (episode("p7", attempt("1,200", "1,200", False), attempt("1200", "1200", False)), (1 / 5,), False, "i→i"),
    # a wrong answer replaced by another wrong one counts as changed though the verdict stays
    (episode("p8", attempt("So 9", "9", False), attempt("So 9.5", "9.5", False)), (2 / 6,), True, "i→i"),
    # LaTeX answers: spacing and \\dfrac normalized; a different value is a change
    (episode("p9", attempt("a", "\\dfrac{1}{2}", True), attempt("b", "\\frac {1}{2}", True)), (1.0,), False, "c→c"),
    (episode("p10", attempt("a", "\\frac{1}{2}", True), attempt("a", "\\frac{1}{3}", False)), (0.0,), True, "c→i"),
]


@pytest.mark.parametrize("before, after, expected", [
    ("kitten", "sitting", 3 / 7), ("abc", "abc", 0.0), ("abc", "xyz", 1.0), ("abcd", "abce", 0.25),
    ("", "", 0.0), ("", "ab", 1.0), ("flaw", "lawn", 2 / 4),
])
def test_edit_ratio_is_levenshtein_over_the_longer_length(before, after, expected):
    assert edit_ratio(before, after) == pytest.approx(expected)
    assert edit_ratio(after, before) == pytest.approx(expected)


@pytest.mark.parametrize("record, ratios, changed, transition", EPISODES + ANSWER_FORMS,
                         ids=[e[0].item.id for e in EPISODES + ANSWER_FORMS])
def test_episode_diagnostics_on_hand_made_episodes(record, ratios, changed, transition):
    found = episode_diagnostics(record)
    assert found.edit_ratios == pytest.approx(ratios)
    assert found.answer_changed is changed
    assert found.transition == transition


def test_three_attempts_compare_consecutive_texts_and_the_first_answer_with_the_last():
    # "5" -> "6" -> "5": each step changes one character of one, yet the final answer is attempt 1's
    record = episode("k3", attempt("5", "5", True), attempt("6", "6", False), attempt("5", "5", True))
    found = episode_diagnostics(record)
    assert found.edit_ratios == (1.0, 1.0) and found.answer_changed is False and found.transition == "c→i"
    assert episode_diagnostics(record, turns=2).answer_changed is True  # a 2-attempt table stops at "6"
    with pytest.raises(ValueError, match="1 attempt"):
        episode_diagnostics(record, turns=1)


def test_row_diagnostics_pool_the_episodes():
    row = row_diagnostics([e[0] for e in EPISODES])
    assert row.n == 5
    assert row.transitions == {"i→c": 1, "c→i": 1, "c→c": 1, "i→i": 2}
    assert row.answer_changed == pytest.approx(3 / 5)  # p2, p3, p5
    assert row.median_edit_ratio == pytest.approx(2 / 13)  # sorted: 0, 0, 2/13, 2/11, 1
    assert sorted(row.edit_ratios) == pytest.approx([0, 0, 2 / 13, 2 / 11, 1])


def test_episodes_csv_lists_each_episode_of_each_method():
    lines = episodes_csv({"m": [e[0] for e in EPISODES[:3]], "n": [EPISODES[4][0]]}, turns=2).splitlines()
    assert lines == ["method,id,transition,answer_changed,answer_first,answer_last,edit_ratio_1_2",
                     "m,p1,i→i,0,12,12,0.000000",
                     "m,p2,i→c,1,6,8,0.181818",  # 2 / 11
                     "m,p3,c→i,1,42,24,1.000000",
                     "n,p5,i→i,1,,,0.153846"]  # 2 / 13; no extracted answers


def test_paired_mcnemar_against_base_on_a_hand_made_case():
    def verdicts(pattern: str) -> list[Episode]:  # Acc@t2 verdicts; attempt 1 is not looked at
        return [episode(f"q{i}", attempt("x", "1", c == "0"), attempt("y", "2", c == "1")) for i, c in enumerate(pattern)]

    base = verdicts("11000100")
    # 5 problems only the method solves, 0 only base solves: p = 2 · (1/2)^5 = 0.0625
    assert paired_mcnemar_p(base, verdicts("11111111")) == 0.0625
    # 2 only the method solves, 1 only base: p = 2 · (C(3,0) + C(3,1)) / 2^3 = 1 (capped); identical: 1
    assert paired_mcnemar_p(base, verdicts("10110100")) == 1.0
    assert paired_mcnemar_p(base, base) == 1.0
    # 7 only the method, 1 only base: p = 2 · (C(8,0) + C(8,1)) / 2^8 = 18 / 256
    assert paired_mcnemar_p(verdicts("10000000"), verdicts("01111111")) == pytest.approx(18 / 256)
    with pytest.raises(ValueError, match="same problems"):
        paired_mcnemar_p(base, base[::-1])


def _stream_episode(prompt: int, y1: int, instruction: int, y2: int, y2_finished: bool):
    """An RL episode as the rollout leaves it: attempt 2's prompt continues attempt 1's token stream
    [x, y1, EOS, instruction] (token ids made up; EOS = 0)."""
    x, a1, p = tuple(range(1, prompt + 1)), tuple(range(50, 50 + y1)), tuple(range(80, 80 + instruction))
    a2 = tuple(range(90, 90 + y2))
    first = Step("attempt", [], "y1", prompt, y1, True, 0.0, prompt_ids=x, token_ids=a1)
    second = Step("attempt", [], "y2", prompt + y1 + 1 + instruction, y2, y2_finished, 0.0,
                  prompt_ids=x + a1 + (0,) + p, token_ids=a2)
    return Episode(Item("e", "q", "a"), [first, second])


def test_training_flops_count_every_token_each_pass_processes_prompts_included():
    """Worked by hand. Episode A: x 5 tokens, y1 3 (+ EOS), instruction 4, y2 2 cut at the limit: its
    sequence is 5 + 3 + 1 + 4 + 2 = 15 tokens. Episode B: x 6, y1 2 (+ EOS), instruction 4, y2 3 (+ EOS):
    6 + 2 + 1 + 4 + 3 + 1 = 17. One RL step processes 15 + 17 = 32 tokens in each pass."""
    from types import SimpleNamespace

    import torch

    from harness.diagnostics import TrainingTokens
    from harness.training.sequences import build_sequences
    from harness.training.steps import RLSteps, SFTSteps

    episodes = [_stream_episode(5, 3, 4, 2, False), _stream_episode(6, 2, 4, 3, True)]
    assert int(build_sequences(episodes, pad_id=0, eos_ids=[0]).attention_mask.sum()) == 32  # what the passes see

    def rl(*modules):  # the step's passes as RLSteps counts them, for a trainer with these declared modules
        return RLSteps(SimpleNamespace(objective=SimpleNamespace(masked_steps="attempts"), modules=list(modules),
                                       accelerator=SimpleNamespace(num_processes=1)))

    plain = rl().passes(episodes)  # score, rrr: policy forward+backward, reference forward
    assert plain == {"policy_tokens": 32.0, "reference_tokens": 32.0}
    shared = SimpleNamespace(name="critic", module=SimpleNamespace())  # a2c2stage: critic adapter on the base
    assert rl(shared).passes(episodes)["critic_tokens"] == 32.0
    own_lm = torch.nn.Linear(3, 2)  # a critic loaded as its own model: N_critic = 3·2 + 2 = 8
    own = rl(SimpleNamespace(name="critic", module=SimpleNamespace(lm=own_lm))).passes(episodes)
    # its states s1 = [x] and s2 = [x, y1, EOS, instruction]: A 5 + 13, B 6 + 13
    assert (own["critic_tokens"], own["critic_parameters"]) == (37.0, 8.0)
    assert rl().passes([]) == {"policy_tokens": 0.0, "reference_tokens": 0.0}  # a skipped step ran no pass
    examples = [SimpleNamespace(input_ids=[1] * 20), SimpleNamespace(input_ids=[1] * 12)]  # SFT: prompt + target
    sft = SimpleNamespace(trainer=SimpleNamespace(accelerator=SimpleNamespace(num_processes=1)))
    assert SFTSteps.passes(sft, examples) == {"policy_tokens": 32.0}

    # FLOPs with N = 1000: 6·N per token of a forward and backward pass, 2·N per token of a forward pass.
    log = [{"step": 1, "tokens": 10.0, **plain},  # 6·1000·32 + 2·1000·32 = 192,000 + 64,000 = 256,000
           {"step": 2, "tokens": 10.0, **plain, "critic_tokens": 32.0},  # + 6·1000·32 = 192,000: 448,000
           {"step": 3, **own},  # 256,000 + 6·8·37 = 256,000 + 1,776 = 257,776
           {"step": 4, "sft_tokens": 7.0, "policy_tokens": 32.0},  # SFT: 6·1000·32 = 192,000
           {"step": 5, "tokens": 10.0, "sft_tokens": 5.0}]  # logged before: 6·1000·(10 + 5) = 90,000
    found = training_tokens(log)
    assert found == TrainingTokens(policy=128.0, reference=96.0, critic=32.0, own_critic_flops=1776.0, legacy=15.0)
    assert found.flops(1000) == 256_000 + 448_000 + 257_776 + 192_000 + 90_000 == 1_243_776
    assert compute([], parameters=1000, training_tokens=found).training_flops == 1_243_776
    # the old estimate, completions only (6·N·generated tokens), for steps 1 and 2: 6·1000·20 = 120,000
    assert training_tokens([{"tokens": 10.0}, {"tokens": 10.0}]).flops(1000) == 120_000


def test_compute_adds_every_step_and_estimates_flops():
    records = [e[0] for e in EPISODES]
    spent = compute(records, parameters=1000, training_tokens=training_tokens(
        [{"step": 1, "tokens": 100.0}, {"step": 2, "tokens": 40.0, "sft_tokens": 10.0}]))
    # 4 plain episodes of 2 × (10 prompt, 5 generated, 1 s); p4: 10 + 30 prompt, 5 + 4 generated, 1.5 s
    assert (spent.n, spent.generated_tokens, spent.prefill_tokens) == (5, 4 * 10 + 9, 4 * 20 + 40)
    assert spent.seconds == pytest.approx(4 * 2.0 + 1.5)
    assert spent.inference_flops == 2 * 1000 * (49 + 120)
    assert spent.training_flops == 6 * 1000 * 150
    blank = compute(records, parameters=None, training_tokens=150.0)
    assert blank.inference_flops is None and blank.training_flops is None
    # two turns of a 3-attempt episode: attempt 3 is not counted
    k3 = episode("k3", attempt("5", "5", True), attempt("6", "6", False), attempt("5", "5", True, prompt=99))
    assert compute([k3], 1, turns=2).prefill_tokens == 20


def test_budget_note_only_beyond_ten_percent():
    assert budget_note({"base": 100.0, "self-refine": 110.0}) == ""
    note = budget_note({"base": 100.0, "self-refine": 111.0})
    assert "more than 10%" in note and "base 100" in note and "self-refine 111" in note
    assert budget_note({"base": 100.0}) == ""


def test_parameter_count_from_the_manifest_else_the_local_config_without_weights(tmp_path):
    from harness.models import load_model

    assert parameter_count({"spec": "embedded", "parameters": 123}) == 123
    assert parameter_count({"spec": str(tmp_path / "missing")}) is None
    assert parameter_count(None) is None
    loaded = load_model("tiny-random")  # builds the tiny model's folder when the cache lacks it
    assert parameter_count({"spec": "tiny-random"}) == sum(p.numel() for p in loaded.model.parameters())


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_report_of_the_reference_shows_diagnostics_equal_to_the_samples_and_is_byte_stable(tmp_path):
    copy = tmp_path / "reference"
    shutil.copytree(REFERENCE, copy, ignore=shutil.ignore_patterns("checkpoints"))
    folder = copy / "compare" / "gsm8k-200"
    names = ("table.md", "table.csv", "table.tex", "episodes.csv", "edit_ratio.png", "edit_ratio.pdf", "transitions.png",
             "transitions.pdf")
    report(folder)
    first = {n: (folder / n).read_bytes() for n in names}
    report(folder)
    assert {n: (folder / n).read_bytes() for n in names} == first
    spec = json.loads((folder / "compare.json").read_text())
    rows = {r["method"]: r for r in _csv(folder / "table.csv") if r["kind"] == "measured"}
    samples = {}
    for row in spec["rows"]:
        by_id = {s["id"]: s for s in map(json.loads, (folder / row["run_dir"] / "samples.jsonl").read_text().splitlines())}
        samples[row["label"]] = [Episode.from_record(by_id[i]) for i in spec["problem_ids"]]
        expected = row_diagnostics(samples[row["label"]], 2)
        found = rows[row["label"]]
        assert float(found["answer_changed_pct"]) == pytest.approx(expected.answer_changed * 100)
        assert float(found["median_edit_ratio"]) == pytest.approx(expected.median_edit_ratio)
        assert {t: int(found[f"n_{t.replace('→', '_to_')}"]) for t in expected.transitions} == expected.transitions
        steps = [st for e in samples[row["label"]] for st in e.steps]
        assert int(found["generated_tokens_total"]) == sum(st.completion_tokens for st in steps)
        assert int(found["prefill_tokens_total"]) == sum(st.prompt_tokens for st in steps)
        parameters = int(found["parameters"])
        assert float(found["inference_flops"]) == pytest.approx(
            2 * parameters * (int(found["generated_tokens_total"]) + int(found["prefill_tokens_total"])))
    assert rows["base"]["mcnemar_p_vs_base"] == ""
    assert float(rows["self-refine"]["mcnemar_p_vs_base"]) == pytest.approx(
        paired_mcnemar_p(samples["base"], samples["self-refine"]))
    episodes = _csv(folder / "episodes.csv")
    assert len(episodes) == len(spec["rows"]) * len(spec["problem_ids"])
    assert [e["id"] for e in episodes if e["method"] == "base"] == spec["problem_ids"]
    markdown = (folder / "table.md").read_text()
    assert "**Diagnostics and compute**" in markdown and "| Method | Answer changed % | Median edit ratio |" in markdown
