"""Third-party plugins arrive through entry points; Self-Refine's feedback -> refine loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.grading import GradingPool
from harness.method import METHODS, get_method
from harness.models import load_model
from harness.rollout import HFGenerator, run_episodes
from harness.sampling import SamplingParams
from harness.rollout.episode import Episode, Step
from harness.task import Grade, Item, get_task
from methods.self_refine import REFINE, says_correct

PLUGIN = '''
from harness.method import Method, Request, register_method


@register_method("echo-twice")
class EchoTwice(Method):
    """Attempt 2 is asked to repeat attempt 1 word for word."""
    name = "echo-twice"
    kind = "prompting"
    paper = "a test plugin"

    def next_request(self, task, item, episode):
        last = episode.steps[-1]
        return Request(last.messages + [{"role": "assistant", "content": last.text},
                                        {"role": "user", "content": "Repeat your answer."}])
'''


@pytest.fixture()
def plugin_dir(tmp_path):
    """A package outside methods/, installed only by a dist-info folder declaring its entry point."""
    (tmp_path / "echo_plugin.py").write_text(PLUGIN)
    info = tmp_path / "echo_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[harness.methods]\necho-twice = echo_plugin\n")
    return tmp_path


def test_an_entry_point_plugin_is_listed_and_runs(plugin_dir, data_dir, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # restored after the test
    monkeypatch.setattr(METHODS, "_discovered", False)  # discover again, now with the plugin on the path
    assert {"echo-twice", "base", "score", "a2c2stage", "self-refine"} <= set(METHODS.names())
    assert METHODS.get("echo-twice").__module__ == "echo_plugin"
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    exe = str(Path(sys.executable).with_name("harness"))
    listed = subprocess.run([exe, "methods"], capture_output=True, text=True, env={**env, "COLUMNS": "200"}, timeout=120)
    assert listed.returncode == 0 and "echo-twice" in listed.stdout
    run = tmp_path / "run"
    done = subprocess.run([exe, "eval", "--method", "echo-twice", "--model", "tiny-random", "--limit", "2",
                           "--max-new-tokens", "4", "--data-dir", str(data_dir), "--out", str(run)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    assert record["steps"][1]["messages"][-1] == {"role": "user", "content": "Repeat your answer."}


@pytest.mark.parametrize("text, verdict", [
    ("The steps check out.\nVerdict: correct", True),
    ("Step 2 adds wrongly.\nVerdict: incorrect", False),
    ("Verdict: correct... wait, no.\nVerdict: Incorrect", False),
    ("**Verdict:** correct", True),  # markdown emphasis, as models write it
    ("Verdict: **correct**", True),
    ("Looks fine to me.", False),  # no verdict: keep refining
])
def test_feedback_verdicts(text, verdict):
    assert says_correct(text) is verdict


def _step(kind, messages, text):
    return Step(kind, messages, text, 10, 5, True, 0.1, Grade(False, None, "x") if kind == "attempt" else None)


def test_self_refine_asks_feedback_then_refines_or_stops():
    method, task = get_method("self-refine"), get_task("gsm8k")
    item = Item("i", "What is 2+3?", "5")
    first = method.first_request(task, item)
    episode = Episode(item, [_step("attempt", first.messages, "2+3=6. Final Answer: The final answer is $6$.")])
    feedback = method.next_request(task, item, episode)
    assert feedback.kind == "feedback"
    assert "What is 2+3?" in feedback.messages[-1]["content"] and "2+3=6" in feedback.messages[-1]["content"]
    episode.steps.append(_step("feedback", feedback.messages, "2+3 is 5, not 6.\nVerdict: incorrect"))
    refine = method.next_request(task, item, episode)
    assert refine.kind == "attempt"
    assert refine.messages == first.messages + [
        {"role": "assistant", "content": episode.steps[0].text},
        {"role": "user", "content": REFINE.format(feedback="2+3 is 5, not 6.\nVerdict: incorrect")}]
    episode.steps[-1] = _step("feedback", feedback.messages, "All steps are right.\nVerdict: correct")
    assert method.next_request(task, item, episode) is None


# The math wording as the committed reference runs were generated with it: byte for byte, on every math task.
MATH_REVIEW = (
    "Review the solution below to the problem. Check every step for errors in understanding, setup and "
    "arithmetic, and explain any error you find. Do not write a new solution. End your review with one "
    'line: "Verdict: correct" if the solution and its final answer are right, or "Verdict: incorrect".\n\n'
    "Problem:\nWhat is 2+3?\n\nSolution:\n2+3=6.")
MATH_REFINE = (
    "Here is feedback on your solution:\n\n2+3 is 5, not 6.\nVerdict: incorrect\n\nUsing this feedback, write an "
    "improved solution. Only output the final solution! At the end of the Solution, when you give your final answer, "
    'write it in the form "Final Answer: The final answer is $answer$. I hope it is correct."')


@pytest.mark.parametrize("name", ["gsm8k", "math", "math500"])
def test_self_refine_keeps_the_math_wording_on_math_tasks(name):
    from harness.prompts import SCORE_SYSTEM

    method, task = get_method("self-refine"), get_task(name)
    item = Item("i", "What is 2+3?", "5")
    episode = Episode(item, [_step("attempt", method.first_request(task, item).messages, "2+3=6.")])
    review = method.next_request(task, item, episode)
    assert review.messages == [{"role": "system", "content": SCORE_SYSTEM}, {"role": "user", "content": MATH_REVIEW}]
    episode.steps.append(_step("feedback", review.messages, "2+3 is 5, not 6.\nVerdict: incorrect"))
    assert method.next_request(task, item, episode).messages[-1]["content"] == MATH_REFINE


def test_self_refine_records_feedback_in_a_real_rollout(data_dir):
    tiny = load_model("tiny-random")
    task = get_task("gsm8k")
    with GradingPool(workers=1) as pool:
        episodes = run_episodes(task, get_method("self-refine"), task.load("test", data_dir)[:2],
                                HFGenerator(tiny.model, tiny.tokenizer, 4), SamplingParams(max_new_tokens=6), 2, pool)
    for episode in episodes:
        kinds = [s.kind for s in episode.steps]
        assert kinds == ["attempt", "feedback", "attempt"]  # random text never says "Verdict: correct"
        record = episode.to_record()
        assert record["steps"][1]["kind"] == "feedback" and record["steps"][1]["grade"] is None
        assert len(record["correct"]) == 2
        # the review shares only the system prompt; the refinement continues attempt 1's conversation
        assert [s.get("shares") for s in record["steps"]] == [None, [0, 1], [0, 3]]
        rebuilt = Episode.from_record(json.loads(json.dumps(record)))
        assert [(s.kind, s.messages, s.text) for s in rebuilt.steps] == [(s.kind, s.messages, s.text) for s in episode.steps]
