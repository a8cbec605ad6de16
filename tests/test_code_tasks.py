"""HumanEval and MBPP: data, prompts, program extraction, grading through the sandbox and the pool,
`harness grade`, and the canonical solutions. Every program here really runs in the sandbox."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError
from harness.grading import grade_many
from harness.grading.code import extract_program
from harness.method import get_method
from harness.prompts import SCORE_CORRECTION
from harness.paper_numbers import reported_rows
from harness.rollout.episode import Episode, Step
from harness.task import get_task
from tasks.code_prompts import CODE_CORRECTION
from sandbox_checks import leftovers, wait_until_clean
from tasks.mbpp import KNOWN_BAD_REFERENCES, SPLIT_IDS

runner = CliRunner()


@pytest.fixture(scope="module")
def humaneval():
    task = get_task("humaneval")
    return task, {item.id: item for item in task.load("test")}


@pytest.fixture(scope="module")
def mbpp(data_dir):
    task = get_task("mbpp")
    items = {}
    for split in SPLIT_IDS:
        items.update({item.meta["task_id"]: item for item in task.load(split, str(data_dir))})
    return task, items


def test_tasks_lists_the_code_tasks_with_split_sizes(data_dir):
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 2}
    assert "test 164" in lines["humaneval"]
    assert "prompt 10, test 500, validation 90, train 374" in lines["mbpp"]


def test_humaneval_comes_from_the_wheel(humaneval):
    task, items = humaneval
    assert list(items) == [f"HumanEval/{i}" for i in range(164)]
    first = items["HumanEval/0"]
    assert first.meta["entry_point"] == "has_close_elements" and "def check(candidate)" in first.meta["test"]
    assert first.answer.startswith(first.question)  # the reference program is the prompt plus the canonical body


def test_mbpp_splits_by_task_id(mbpp, data_dir, monkeypatch):
    task, items = mbpp
    assert len(items) == 974
    for split, ids in SPLIT_IDS.items():
        loaded = task.load(split, str(data_dir))
        assert [i.meta["task_id"] for i in loaded] == list(ids) and len(loaded) == task.splits[split]
    assert items[367].meta["setup"]  # builds a Node tree from classes the program defines
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarnessError, match="HARNESS_DATA_DIR"):
        get_task("mbpp").load("test")


def test_prompts(humaneval, mbpp):
    he_task, he = humaneval
    messages = he_task.prompt(he["HumanEval/0"])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert he["HumanEval/0"].question in messages[1]["content"]
    task, items = mbpp
    messages = task.prompt(items[11])
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    for turn, shot in zip(messages[2:7:2], (2, 3, 4)):  # MBPP's canonical 3-shot examples, in order
        assert items[shot].answer.strip() in turn["content"]
    assert messages[-1]["content"].startswith("You are an expert Python programmer, and here is your task: ")
    assert items[11].meta["tests"][0] in messages[-1]["content"]


def test_code_tasks_get_the_code_correction_instruction_unless_the_user_gives_one(humaneval):
    task, items = humaneval
    item = items["HumanEval/0"]
    first = Step("attempt", task.prompt(item), "```python\npass\n```", prompt_tokens=0, completion_tokens=0,
                 finished=True, seconds=0.0)
    episode = Episode(item, [first])
    assert get_method("base").next_request(task, item, episode).messages[-1]["content"] == CODE_CORRECTION
    mine = get_method("base", correction_instruction="Try again.")
    assert mine.next_request(task, item, episode).messages[-1]["content"] == "Try again."
    gsm8k = get_task("gsm8k")
    assert get_method("base").instruction_for(gsm8k) == SCORE_CORRECTION


@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_self_refine_and_rrr_requests_on_code_ask_for_a_program_not_a_final_answer(name, humaneval, mbpp):
    from tasks.code_prompts import CODE_ANSWER_FORMAT, CODE_REFLECT, CODE_REVIEW_SYSTEM

    task, items = humaneval if name == "humaneval" else mbpp
    item = next(iter(items.values()))
    first = Step("attempt", task.prompt(item), "```python\npass\n```", prompt_tokens=0, completion_tokens=0,
                 finished=True, seconds=0.0)

    def then(episode: Episode, kind: str, text: str) -> Episode:
        return Episode(item, episode.steps + [Step(kind, [], text, 0, 0, True, 0.0)])

    # Self-Refine: the feedback request, then the refine request
    refine = get_method("self-refine")
    review = refine.next_request(task, item, Episode(item, [first]))
    assert review.kind == "feedback" and review.messages[0]["content"] == CODE_REVIEW_SYSTEM
    assert "program" in review.messages[-1]["content"] and item.question in review.messages[-1]["content"]
    rewrite = refine.next_request(task, item, then(Episode(item, [first]), "feedback", "Off by one.\nVerdict: incorrect"))
    assert rewrite.kind == "attempt" and rewrite.messages[-1]["content"].endswith(CODE_ANSWER_FORMAT)
    # RRR: the reflection request, then the retry request
    rrr = get_method("rrr")
    reflect = rrr.next_request(task, item, Episode(item, [first]))
    assert reflect.kind == "reflection" and reflect.messages[-1]["content"] == CODE_REFLECT
    retry = rrr.next_request(task, item, then(Episode(item, [first]), "reflection", "I missed the empty list."))
    assert retry.kind == "attempt"
    assert retry.messages[-1]["content"] == "Now solve the problem again, using your reflection. " + CODE_ANSWER_FORMAT
    for request in (review, rewrite, reflect, retry):
        for message in request.messages:
            if message["role"] != "assistant":
                assert "Final Answer" not in message["content"] and "final answer" not in message["content"]
    assert "```python code block" in CODE_ANSWER_FORMAT


PROMPT = "from typing import List\n\n\ndef head(xs: List[int]) -> int:\n    \"\"\"First element.\"\"\"\n"
EXTRACTION_CASES = [
    # (response, expected program)
    ("Here:\n```python\ndef head(xs):\n    return xs[0]\n```\nDone.",
     "from typing import List\ndef head(xs):\n    return xs[0]\n"),
    ("```python\ndef head(xs):\n    return 1\n```\nBetter:\n```python\ndef head(xs):\n    return xs[0]\n```",
     "from typing import List\ndef head(xs):\n    return xs[0]\n"),
    ("```\ndef head(xs):\n    return xs[0]\n```", "from typing import List\ndef head(xs):\n    return xs[0]\n"),
    ("```python\n    return xs[0]\n```", PROMPT + "    return xs[0]\n"),  # a body continuing the prompt
    ("    return xs[0]\n", PROMPT + "    return xs[0]\n"),  # a plain completion
    ("```python\ndef head(xs):\n    return xs[0]", "from typing import List\ndef head(xs):\n    return xs[0]"),  # cut off
    ("```bash\nls\n```\n```python\ndef head(xs):\n    return xs[0]\n```", "from typing import List\ndef head(xs):\n    return xs[0]\n"),
]


@pytest.mark.parametrize("response, expected", EXTRACTION_CASES)
def test_extract_program(response, expected):
    assert extract_program(response, PROMPT, "head") == expected


def test_grading_humaneval_responses(humaneval):
    task, items = humaneval
    item = items["HumanEval/0"]
    body = item.answer[len(item.question):]
    full = "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n" + body
    cases = [
        (body, True),  # the canonical completion, continuing the prompt
        (f"Sure!\n```python\n{full}```", True),  # a full function; `List` comes from the prompt's imports
        ("```python\ndef has_close_elements(numbers, threshold):\n    return False\n```", False),
        ("I cannot solve this.", False),
    ]
    grades = [task.grade(item, response) for response, _ in cases]
    assert [g.correct for g in grades] == [c for _, c in cases]
    assert grades[1].extracted.startswith("from typing import List\n")
    assert grades[2].reason.startswith("the test set-up failed") or "AssertionError" in grades[2].reason
    assert grades[3].reason.startswith("SyntaxError")


def test_harness_grade_humaneval_and_mbpp(tmp_path, humaneval, mbpp):
    _, he = humaneval
    _, mb = mbpp
    rows = [{"task_id": "HumanEval/2", "response": he["HumanEval/2"].answer[len(he["HumanEval/2"].question):]},
            {"task_id": "HumanEval/2", "response": "```python\ndef truncate_number(number):\n    return 0.0\n```"}]
    src, out = tmp_path / "he.jsonl", tmp_path / "he.graded.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["grade", "--task", "humaneval", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["correct"] for g in graded] == [True, False]
    assert graded[1]["extracted"] == "def truncate_number(number):\n    return 0.0\n" and graded[1]["reason"]
    rows = [{"task_id": 11, "response": f"```python\n{mb[11].answer}\n```"}, {"task_id": "mbpp/11", "response": "x"}]
    src, out = tmp_path / "mb.jsonl", tmp_path / "mb.graded.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["grade", "--task", "mbpp", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["correct"] for line in out.read_text().splitlines()] == [True, False]
    src.write_text(json.dumps({"task_id": "HumanEval/999", "response": "x"}) + "\n")
    bad_out = tmp_path / "bad.jsonl"
    result = runner.invoke(app, ["grade", "--task", "humaneval", str(src), "--out", str(bad_out)])
    assert result.exit_code == 2 and "unknown HumanEval task_id" in result.output and not bad_out.exists()


def test_the_pool_grades_hostile_programs_and_keeps_going(mbpp):
    task, items = mbpp
    item = items[11]  # remove_Occ(s, ch): remove the first and last occurrence of ch
    responses = [
        "```python\nwhile True:\n    pass\n```",
        "```python\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n```",
        "```python\nimport os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(0, signal.SIGKILL)\n```",
        "```python\nx = bytearray(10 * 1024 ** 3)\n```",
        f"```python\n{item.answer}\n```",
    ]
    before = leftovers()
    started = time.monotonic()
    grades = grade_many(task, [item] * len(responses), responses, workers=2)
    assert [g.correct for g in grades] == [False, False, False, False, True], grades
    assert time.monotonic() - started < 30
    assert wait_until_clean(before) == before
    assert "timed out" in grades[0].reason and "MemoryError" in grades[3].reason


@pytest.mark.slow
def test_canonical_solutions_pass(humaneval, mbpp):
    """All 164 HumanEval and all MBPP test + train reference programs, through the pool on every core."""
    he_task, he = humaneval
    before = leftovers()
    started = time.monotonic()
    he_grades = grade_many(he_task, list(he.values()), [i.answer[len(i.question):] for i in he.values()])
    he_seconds = time.monotonic() - started
    assert [i for i, g in zip(he, he_grades) if not g.correct] == []
    task, items = mbpp
    chosen = [items[i] for i in (*SPLIT_IDS["test"], *SPLIT_IDS["train"])]
    started = time.monotonic()
    grades = grade_many(task, chosen, [f"```python\n{i.answer}\n```" for i in chosen])
    mbpp_seconds = time.monotonic() - started
    failing = {i.meta["task_id"]: g.reason for i, g in zip(chosen, grades) if not g.correct}
    # Upstream exceptions (tasks/mbpp.py; 596 is a validation problem); 123 takes about 3.6 s alone, near
    # the 4 s deadline on shared cores.
    known = {i for i in KNOWN_BAD_REFERENCES if i in SPLIT_IDS["test"] or i in SPLIT_IDS["train"]}
    assert known == {341, 642} and known <= set(failing) <= known | {123}, failing
    assert wait_until_clean(before) == before
    print(f"\ncanonical solutions: HumanEval 164 in {he_seconds:.1f} s, MBPP test+train {len(chosen)} in "
          f"{mbpp_seconds:.1f} s; failing {sorted(failing)}")


def test_reported_rows_follow_the_task():
    assert {r.short_source for r in reported_rows("humaneval")} == {"SCoRe Tab. 3, HumanEval"}
    mbpp_rows = reported_rows("mbpp")
    assert [(r.label, r.acc_t2) for r in mbpp_rows] == [("Base", 47.3), ("Self-Refine", 30.7), ("Pair-SFT", 59.8),
                                                         ("SCoRe", 60.6)]
    math = {r.short_source for r in reported_rows("math500")}
    assert math == {"SCoRe Tab. 2, MATH500", "A2C Tab. IV"}  # Tab. 4 is MATH's (issue 21)
    score = next(r for r in reported_rows("humaneval") if r.label == "SCoRe")
    assert (score.acc_t1, score.acc_t2, score.delta, score.i_to_c, score.c_to_i) == (52.4, 64.6, 12.2, 15.2, 3.0)


def test_lm_eval_humaneval_docs_are_our_items_graded_in_the_sandbox(humaneval):
    pytest.importorskip("lm_eval")
    from harness.lmeval.tasks import utils

    _, items = humaneval
    docs = utils.load_humaneval()["test"]
    assert len(docs) == 164
    doc = docs[0]
    item = items[doc["id"]]
    assert utils.process_results(doc, [item.answer[len(item.question):]]) == {"acc": 1}
    assert utils.process_results(doc, ["```python\ndef has_close_elements(a, b):\n    return True\n```"]) == {"acc": 0}
