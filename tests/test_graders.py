"""Grader verdicts on hand-written (gold, response, verdict) cases, plus hostile inputs.

The cases live in tests/cases/*.yaml so that they read as data; each has a `why` tag that names what
it checks. Every case runs through the task's own `grade`, exactly as rollouts and `harness grade` do.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from harness.task import Item, get_task

CASES = Path(__file__).parent / "cases"


def load_cases(name: str) -> list:
    cases = yaml.safe_load((CASES / f"{name}.yaml").read_text())
    return [pytest.param(case, id=f"{i}-{case.get('why', '')[:40]}") for i, case in enumerate(cases)]


def item_for(task_name: str, case: dict) -> Item:
    if task_name == "countdown":
        return Item("case", "", "", {"numbers": case["numbers"], "target": case["target"]})
    return Item("case", "", str(case["gold"]))


@pytest.mark.parametrize("case", load_cases("math"))
def test_math_cases(case):
    grade = get_task("math").grade(item_for("math", case), case["response"])
    assert grade.correct is case["correct"], (case["why"], grade)


@pytest.mark.parametrize("case", load_cases("gsm8k"))
def test_gsm8k_cases(case):
    grade = get_task("gsm8k").grade(item_for("gsm8k", case), case["response"])
    assert grade.correct is case["correct"], (case["why"], grade)


@pytest.mark.parametrize("case", load_cases("countdown"))
def test_countdown_cases(case):
    grade = get_task("countdown").grade(item_for("countdown", case), case["response"])
    assert grade.correct is case["correct"], (case["why"], grade)


def test_case_counts_and_balance():
    counts = {name: yaml.safe_load((CASES / f"{name}.yaml").read_text()) for name in ("math", "gsm8k", "countdown")}
    assert sum(len(c) for c in counts.values()) >= 180
    for name, cases in counts.items():
        wrong = sum(not c["correct"] for c in cases)
        assert 0.25 < wrong / len(cases) < 0.75, name  # both verdicts are exercised


def test_extracted_answer_is_reported():
    grade = get_task("math").grade(
        Item("x", "", r"\frac{14}{3}"), "So f sums to 14/3.\nFinal Answer: The final answer is $\\frac{14}{3}$. I hope it is correct."
    )
    assert (grade.correct, grade.extracted) == (True, r"\frac{14}{3}")
    grade = get_task("gsm8k").grade(Item("x", "", "1000"), "She pays $1,000.00 in total.")
    assert (grade.correct, grade.extracted) == (True, "1000.00")


@pytest.mark.parametrize("task_name", ["math", "gsm8k", "countdown"])
@pytest.mark.parametrize("response", ["", "   ", "I don't know.", "\\boxed{", "<answer></answer>"])
def test_no_answer_is_incorrect_not_an_exception(task_name, response):
    case = {"gold": "5", "numbers": [1, 2, 3], "target": 6}
    assert get_task(task_name).grade(item_for(task_name, case), response).correct is False


def test_math_grading_works_off_the_main_thread():
    """math-verify's SIGALRM timer would raise in a thread; the grader must switch it off there."""
    results = []
    item = Item("x", "", r"\frac{1}{2}")
    thread = threading.Thread(target=lambda: results.append(get_task("math").grade(item, r"\boxed{0.5}")))
    thread.start()
    thread.join(30)
    assert results and results[0].correct
