"""`harness regrade RUN_OR_COMPARE_DIR`: grade stored samples again with today's graders, without a model.

An eval run (samples.jsonl): every graded step is graded again through the grading pool (the same
5 s bound as in rollouts), each sample's `correct` row follows its attempts' new verdicts, and
samples.jsonl and metrics.json are rewritten atomically, with a `regraded` note in the manifest, only
when a stored grade changed; then its tables and plots are rebuilt (`harness report`). A comparison
(compare.json): every run it references, then compare.json's row metrics, tables and plots. A second
regrade finds nothing to change and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.report import Outputs, report, summarize_rows, write_compare_outputs
from harness.errors import HarnessError
from harness.grading import GradingPool
from harness.manifest import git_state
from harness.store import CompareFolder, Folder, RunStore, folder_kind
from harness.rollout.episode import read_episodes
from harness.task import GRADER_VERSION, get_task


@dataclass
class RunRegrade:
    run_dir: Path
    to_correct: list[int]  # per attempt: verdicts flipped incorrect -> correct
    to_incorrect: list[int]  # per attempt: correct -> incorrect
    changed: int = 0  # samples whose stored grades changed at all (verdict, reason or version)

    def summary(self) -> str:
        parts = [f"attempt {k + 1}: {up + down} flipped ({up} incorrect→correct, {down} correct→incorrect)"
                 for k, (up, down) in enumerate(zip(self.to_correct, self.to_incorrect))]
        return "; ".join(parts) + f"; {self.changed} samples rewritten"


@dataclass
class Regrade:
    outputs: Outputs
    runs: list[RunRegrade] = field(default_factory=list)


def _config(run_dir: Path) -> dict[str, Any]:
    return RunStore(run_dir).read_config(("task",), "no config.yaml (not an eval run)")


def regrade_run(run_dir: Path, pool: GradingPool) -> RunRegrade:
    """Grade one eval run's stored attempts again; rewrites its files only when a grade changed."""
    from harness.metrics import score_episodes

    store = RunStore(run_dir)
    config = _config(run_dir)
    task = get_task(config["task"])
    episodes = read_episodes(run_dir)
    before = [json.dumps(e.to_record(), sort_keys=True) for e in episodes]
    verdicts = [e.correct for e in episodes]
    graded = [(e, step) for e in episodes for step in e.steps if step.grade is not None]
    unique: dict[tuple[str, str], int] = {}  # a carried attempt repeats its text: grade it once
    for episode, step in graded:
        unique.setdefault((episode.item.id, step.text), len(unique))
    items = {e.item.id: e.item for e in episodes}
    keys = list(unique)
    grades = pool.grade(task, [items[i] for i, _ in keys], [text for _, text in keys])
    for episode, step in graded:
        step.grade = grades[unique[(episode.item.id, step.text)]]
    turns = int(config.get("turns", 2))
    result = RunRegrade(run_dir, [0] * turns, [0] * turns)
    for episode, old, record in zip(episodes, verdicts, before):
        for k, (was, now) in enumerate(zip(old[:turns], episode.correct[:turns])):
            result.to_correct[k] += now and not was
            result.to_incorrect[k] += was and not now
        result.changed += json.dumps(episode.to_record(), sort_keys=True) != record
    if result.changed:
        store.rewrite_samples([e.to_record() for e in episodes])
        scored_episodes = episodes[: int(config["limit"])] if config.get("limit") else episodes
        _, scored = score_episodes(scored_episodes, turns)
        store.write_metrics({
            "task": config["task"], "split": config.get("split"), "method": config.get("method"),
            "model": config.get("model"), "n": len(scored_episodes), **scored})
        note_regrade(store, {"samples_changed": result.changed, "incorrect_to_correct": result.to_correct,
                             "correct_to_incorrect": result.to_incorrect})
    return result


def note_regrade(folder: Folder, what: dict[str, Any]) -> None:
    """Record the grader version now in force, and when and from which commit the regrade ran."""
    folder.note_in_manifest("regraded", {
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "grader_version": GRADER_VERSION,
        "git": git_state(), **what}, grader_version=GRADER_VERSION)


def regrade(path: Path, workers: int | None = None) -> Regrade:
    """Regrade an eval run folder, or every run of a comparison folder, and rebuild their outputs."""
    path = Path(path)
    if not path.is_dir():
        raise HarnessError(f"{path}: no such folder")
    kind = folder_kind(path)
    if kind == "compare":
        compare = CompareFolder(path)
        spec = compare.read_spec()
        run_dirs = list(dict.fromkeys((path / row["run_dir"]).resolve() for row in spec["rows"]))
    elif kind == "eval":
        spec, run_dirs = None, [path]
    else:
        raise HarnessError(f"{path}: not a comparison (compare.json) or eval run (samples.jsonl)")
    for run_dir in run_dirs:
        _config(run_dir)  # every run is checked before anything is rewritten
        if not RunStore(run_dir).has_samples():
            raise HarnessError(f"{run_dir}: no samples.jsonl")
    from contextlib import ExitStack

    with ExitStack() as held, GradingPool(workers) as pool:
        if spec is not None:  # a comparison being written is not rewritten under it either
            held.enter_context(compare.lock())
        for run_dir in run_dirs:  # a run being written (eval) is not rewritten under it: refused, one line
            held.enter_context(RunStore(run_dir).lock())
        runs = [regrade_run(run_dir, pool) for run_dir in run_dirs]
        if spec is None:
            return Regrade(report(path), runs)
        outputs = write_compare_outputs(path, spec)
        summarize_rows(spec, outputs)
        compare.write_spec(spec)
        if any(run.changed for run in runs):
            note_regrade(compare, {"runs_changed": [str(run.run_dir.name) for run in runs if run.changed]})
    return Regrade(outputs, runs)
