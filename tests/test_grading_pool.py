"""The multi-core grading pool: same verdicts as in-process, and a hard deadline on hostile input."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from harness.errors import HarnessError
from harness.grading import GradingPool, grade_many
from harness.grading.worker import START_DELAY_ENV
from harness.task import GRADER_VERSION, Grade, Item, Task, get_task

BOMBS = [
    "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",  # deeply nested braces
    "Final Answer: The final answer is $" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "$.",  # \frac bomb
    "\\boxed{9^{9^{9^{9}}}}",  # a power sympy would compute in C, where no signal reaches
    "\\boxed{(10^{100000})!}",
    "word " * 20000 + "\\boxed{3}",  # a 100 kB response whose answer is wrong
    "1+" * 50000 + "1",  # 100 kB of arithmetic with no boxed answer
]


@pytest.fixture(scope="module")
def pool():
    with GradingPool(workers=2) as p:
        yield p


def test_pool_matches_in_process_verdicts(pool):
    task = get_task("math")
    items = [Item(str(i), "", gold) for i, gold in enumerate([r"\frac12", "3", r"2\sqrt{2}", "(1,2)"] * 5)]
    responses = [r"\boxed{0.5}", r"\boxed{4}", r"\boxed{\sqrt{8}}", r"\boxed{(2,1)}"] * 5
    expected = [replace(task.grade(i, r), grader_version=GRADER_VERSION) for i, r in zip(items, responses)]
    assert pool.grade(task, items, responses) == expected
    assert [g.correct for g in expected[:4]] == [True, False, True, False]


@pytest.mark.parametrize("task_name", ["math", "gsm8k", "countdown"])
def test_hostile_inputs_are_incorrect_within_five_seconds_each(pool, task_name):
    task = get_task(task_name)
    item = Item("x", "", "5", {"numbers": [1, 2, 3], "target": 6})
    for response in BOMBS:
        start = time.monotonic()
        (grade,) = pool.grade(task, [item], [response])
        elapsed = time.monotonic() - start
        assert grade.correct is False, (response[:40], grade)
        assert elapsed < 5.5, (response[:40], elapsed)  # 5 s hard deadline plus process start


def test_a_timed_out_worker_is_replaced_and_the_batch_completes(pool):
    task = get_task("math")
    items = [Item(str(i), "", "3") for i in range(6)]
    responses = [r"\boxed{3}", BOMBS[2], r"\boxed{3}", BOMBS[3], r"\boxed{3}", r"\boxed{4}"]
    grades = pool.grade(task, items, responses)
    assert [g.correct for g in grades] == [True, False, True, False, True, False], grades


def test_a_new_task_object_is_loaded_even_where_an_old_one_lived(pool):
    """Tasks are fresh objects per get_task call; one freed object's id() can come back as the next's.
    The pool must still load the new task, or the countdown grader would mark MATH answers."""
    countdown_item, math_item = Item("c", "", "6", {"numbers": [1, 2, 3], "target": 6}), Item("m", "", "3")
    for _ in range(5):
        task = get_task("countdown")
        (countdown,) = pool.grade(task, [countdown_item], ["1+2+3"])
        del task  # freed here, so the next get_task may be given the same address
        task = get_task("math")
        (math,) = pool.grade(task, [math_item], [r"\boxed{3}"])
        del task
        assert (countdown.correct, math.correct) == (True, True), (countdown, math)


def test_ctrl_c_in_the_terminal_does_not_kill_the_workers():
    """SIGINT goes to the whole foreground process group; the parent stops (and checkpoints) on its own."""
    import signal

    task = get_task("gsm8k")
    with GradingPool(workers=2) as pool:
        pool.grade(task, [Item("a", "", "1")], ["#### 1"])  # workers started and ready
        for worker in pool._workers:
            worker.process.send_signal(signal.SIGINT)
        grades = pool.grade(task, [Item(str(i), "", str(i)) for i in range(4)], [f"#### {i}" for i in range(4)])
        assert [g.correct for g in grades] == [True] * 4, grades
        assert all(w.process.poll() is None for w in pool._workers)


def test_progress_callback_counts_every_item():
    done = []
    task = get_task("gsm8k")
    grades = grade_many(task, [Item(str(i), "", str(i)) for i in range(10)], [f"#### {i}" for i in range(10)],
                        workers=2, on_done=done.append)
    assert all(g.correct for g in grades) and sum(done) == 10


def test_hard_deadline_kills_a_worker_stuck_past_it():
    """math-verify's own 2 s timer is longer than this pool's 1 s deadline: the parent must kill."""
    task = get_task("math")
    with GradingPool(workers=1, hard_timeout=1.0) as pool:
        grades = pool.grade(task, [Item("a", "", "5"), Item("b", "", "5")], [BOMBS[2], r"\boxed{5}"])
    # (no wall-clock bound here: the workers' start-up on a loaded machine is not the deadline's business)
    assert grades[0].correct is False and grades[0].reason == "grading timed out after 1 s"
    assert grades[1].correct is True  # the replacement worker carried on


def test_a_task_the_worker_cannot_import_is_an_error_not_silent_zeros(tmp_path, monkeypatch):
    """Grading everything incorrect because a worker failed to load the task would look like a result."""
    import importlib
    import shutil

    (tmp_path / "vanishing_task.py").write_text(
        "from tasks.gsm8k import GSM8K\n\nclass Vanishing(GSM8K):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("vanishing_task")
    (tmp_path / "vanishing_task.py").unlink()  # gone before any worker starts
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    with pytest.raises(HarnessError, match="cannot use task 'gsm8k'"):
        grade_many(module.Vanishing(), [Item("x", "", "1")], ["1"], workers=1)


class SleepyTask(Task):
    """Grading sleeps for the number of seconds in the gold answer ("hang": far past any deadline)."""

    name = "sleepy"
    splits = {"test": 0}

    def load(self, split, data_dir=None):
        return []

    def prompt(self, item):
        return []

    def grade(self, item, response):
        time.sleep(3600 if item.answer == "hang" else float(item.answer))
        return Grade(True, response, "slept")


def test_a_job_deadline_counts_only_its_own_grading_time(monkeypatch):
    """Class 9 of issue 10: worker A's job times out (3 s) while worker B grades its second job (2 s of a 3 s
    deadline). A's replacement starts slowly (as on a loaded machine); B's answer must still count."""
    monkeypatch.setenv(START_DELAY_ENV, "4")
    items = [Item("hang", "", "hang"), Item("b1", "", "2"), Item("b2", "", "2")]
    with GradingPool(workers=2, hard_timeout=3.0) as pool:
        grades = pool.grade(SleepyTask(), items, ["a", "b1", "b2"])
    assert "timed out" in grades[0].reason and not grades[0].correct
    assert [g.correct for g in grades[1:]] == [True, True], grades
