"""The rollout-token budget (harness/training/budget.py): RL runs stop on the step that spends it, SFT runs
spend it on their collections, resumes keep counting, and runs without a budget keep their identity."""

from __future__ import annotations

import json
import random

import pytest

import toy_task  # noqa: F401  (registers the toy-digit task)
from harness.checkpoint import latest_checkpoint
from harness.errors import HarnessError
from harness.training.budget import problem_chunks
from harness.training.config import load_train_config
from harness.training.loop import train
from harness.training.trainer import Cursor


def _config(method: str, out, **sets):
    pairs = [f"{k}={v}" for k, v in {"task": "toy-digit", "max_new_tokens": 4, "problems_per_step": 4,
                                      "samples_per_problem": 2, "temperature": 1.0, "checkpoint_every": 1000,
                                      **sets}.items()]
    return load_train_config("cpu-tiny", None, pairs, {"method": method, "out": str(out)})


def _log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _state(run) -> dict:
    return json.loads((latest_checkpoint(run) / "trainer_state.json").read_text())


def test_an_rl_run_stops_on_the_step_that_spends_its_budget_and_a_resume_keeps_counting(tmp_path):
    sets = {"max_steps": 50, "method_options.stage1_steps": 2}
    run = train(_config("score", tmp_path / "run", rollout_tokens=150, **sets))
    logs = _log(run)
    totals = [x["rollout_tokens_total"] for x in logs]
    # Each step adds what its rollout generated (score never carries an attempt: every token is new).
    assert [x["rollout_tokens"] for x in logs] == [x["tokens"] for x in logs]
    assert totals == [sum(x["tokens"] for x in logs[: i + 1]) for i in range(len(logs))]
    assert totals[-1] >= 150 and (len(totals) == 1 or totals[-2] < 150), totals
    assert len(logs) < 50 and _state(run)["step"] == len(logs) and _state(run)["rollout_tokens"] == totals[-1]
    assert _state(run)["finished"]
    # Finished: resuming with the same budget does nothing; a larger budget continues from the saved count.
    train(_config("score", run, rollout_tokens=150, **sets), resume=True)
    assert len(_log(run)) == len(logs)
    train(_config("score", run, rollout_tokens=400, **sets), resume=True)
    more = [x["rollout_tokens_total"] for x in _log(run)]
    assert more[: len(totals)] == totals and more[-1] >= 400 and more[-2] < 400
    # The same run straight to 400 tokens: the same counts step for step (a resume is exact).
    straight = train(_config("score", tmp_path / "straight", rollout_tokens=400, **sets))
    assert [x["rollout_tokens_total"] for x in _log(straight)] == more


@pytest.mark.parametrize("method,sets", [
    ("pair-sft", {"method_options.samples": 4}),
    ("star", {"method_options.iterations": 2, "method_options.steps_per_iteration": 1, "max_steps": 2}),
])
def test_an_sft_run_spends_its_budget_on_collections_a_step_of_problems_at_a_time(tmp_path, method, sets):
    budget = 300
    reports = []
    run = train(_config(method, tmp_path / "run", rollout_tokens=budget, **sets),
                progress=lambda step, total, logs: reports.append(logs))
    files = sorted((run / "sft").glob("iteration-*.json"))
    # The collection reports how far it is after each step of problems, before the iteration's first step.
    collecting = [r for r in reports if "collect_share" in r]
    assert len(collecting) >= len(files) and all(r["collected_tokens"] > 0 for r in collecting)
    spent = 0
    position = Cursor()
    for number, path in enumerate(files):
        data = json.loads(path.read_text())
        stats, share = data["stats"], -(-(budget - spent) // (len(files) - number))
        collected = int(stats["collected_problems"])
        # Whole steps of problems (4) until the iteration's share was reached, and not one chunk more.
        assert stats["collected_tokens"] >= share and collected % 4 == 0 and collected < 200
        per_sample = (4 if method == "pair-sft" else 2) * 2 * 4  # samples x attempts x max tokens
        assert stats["collected_tokens"] - share < 4 * per_sample
        # The data cursor stands right after the problems sampled, so the next collection starts there.
        position.take(collected, 200, 0)
        assert data["cursor"] == {"epoch": position.epoch, "position": position.position}
        assert {e["problem_id"] for e in data["examples"]} <= set(_problem_ids(run, data["cursor"], collected))
        assert [r for r in collecting if r["collect_share"] == share][-1]["collected_tokens"] == stats["collected_tokens"]
        spent += int(stats["collected_tokens"])
    assert spent >= budget and _state(run)["rollout_tokens"] == spent
    assert _log(run)[-1]["rollout_tokens_total"] == spent


def _problem_ids(run, cursor: dict, last: int) -> list[str]:
    """The ids of the `last` problems the data stream handed out before `cursor`."""
    from harness.task import get_task

    items = get_task("toy-digit").load("train")
    order = []
    for epoch in range(cursor["epoch"] + 1):
        shuffled = list(range(len(items)))
        random.Random(f"0:{epoch}").shuffle(shuffled)
        order.extend(shuffled)
    end = cursor["epoch"] * len(items) + cursor["position"]
    return [items[i].id for i in order[end - last : end]]


def test_a_two_stage_method_on_a_budget_needs_its_stage_boundary(tmp_path):
    with pytest.raises(HarnessError, match="stage1_steps"):
        _config("a2c2stage", tmp_path / "run", rollout_tokens=1000)
    _config("a2c2stage", tmp_path / "run", rollout_tokens=1000, **{"method_options.stage1_steps": 3})


def test_no_budget_leaves_a_runs_identity_and_folder_as_before(tmp_path):
    plain = _config("score", tmp_path / "x", results_dir=str(tmp_path))
    zero = _config("score", tmp_path / "x", rollout_tokens=0, results_dir=str(tmp_path))
    assert "rollout_tokens" not in plain.identity() and zero.identity() == plain.identity()
    budgeted = _config("score", tmp_path / "x", rollout_tokens=500, **{"method_options.stage1_steps": 1})
    assert "rollout_tokens" not in budgeted.identity()  # it may grow on a resume, as max_steps may
    plain.out = zero.out = budgeted.out = None
    assert plain.run_dir() == zero.run_dir() != budgeted.run_dir()


def test_problem_chunks_keep_a_problems_samples_together():
    class Item:
        def __init__(self, id):
            self.id = id

    items = [Item(p) for p in "aabbccdde"]
    assert [[i.id for i in chunk] for chunk in problem_chunks(items, 2)] == [list("aabb"), list("ccdd"), ["e"]]


def test_the_progress_line_says_how_far_a_collection_or_the_budget_is():
    from harness.training.runlog import status_line

    assert status_line({"collected_tokens": 1200.0, "collect_share": 40000}) == "collecting 1,200/40,000 tokens"
    line = status_line({"r1": 0.25, "r2": 0.5, "delta": 0.25, "step_s": 3.0, "rollout_tokens_total": 5000.0}, 120000)
    assert line == "r1 0.25  r2 0.50  Δ +0.25  3.0s/step  5,000/120,000 tokens"
