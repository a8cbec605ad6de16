"""`harness regrade`: stored samples graded again with today's graders, no model; a second run changes nothing.

Runs are small copies of the committed reference (real samples of the embedded model), with a few
stored verdicts turned into what an older, lenient grader would have said.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.report import report
from harness.cli import app
from harness.metrics import score_episodes
from harness.rollout.episode import episodes_of
from harness.task import GRADER_VERSION

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"
KEEP = 4  # problems per run: enough for flips both ways, cheap to grade


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _as_if_graded_by_version_1(samples: list[dict]) -> tuple[int, int]:
    """Drop the grader versions and flip the first attempt's stored verdict of two samples."""
    wrong_marked_right = right_marked_wrong = 0
    for sample in samples:
        for step in sample["steps"]:
            if step.get("grade"):
                step["grade"].pop("grader_version", None)
    for sample in samples[:2]:
        first = next(s for s in sample["steps"] if s["kind"] == "attempt")
        first["grade"]["correct"] = not first["grade"]["correct"]
        sample["correct"][0] = first["grade"]["correct"]
        wrong_marked_right += first["grade"]["correct"]
        right_marked_wrong += not first["grade"]["correct"]
    return wrong_marked_right, right_marked_wrong


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def small_reference(tmp_path) -> Path:
    """The reference comparison cut to its first KEEP problems, stored as an older grader left it."""
    copy = tmp_path / "reference"
    shutil.copytree(REFERENCE, copy, ignore=shutil.ignore_patterns("checkpoints"))
    compare = copy / "compare" / "gsm8k-200"
    spec = json.loads((compare / "compare.json").read_text())
    spec["problem_ids"] = spec["problem_ids"][:KEEP]
    (compare / "compare.json").write_text(json.dumps(spec, indent=2))
    for row in spec["rows"]:
        run = compare / row["run_dir"]
        samples = _lines(run / "samples.jsonl")[:KEEP]
        _as_if_graded_by_version_1(samples)
        _write(run / "samples.jsonl", samples)
    return compare


def test_regrade_eval_run_flips_stale_verdicts_and_a_rerun_changes_nothing(small_reference):
    run = next((small_reference.parent.parent / "runs").glob("gsm8k-base-*"))
    stale = _lines(run / "samples.jsonl")
    assert any("older grader version" in w for w in report(run).warnings)
    runner = CliRunner()
    result = runner.invoke(app, ["regrade", str(run), "--workers", "1"])
    assert result.exit_code == 0, result.output
    samples = _lines(run / "samples.jsonl")
    flipped_up = sum(not a["correct"][0] and b["correct"][0] for a, b in zip(stale, samples))
    flipped_down = sum(a["correct"][0] and not b["correct"][0] for a, b in zip(stale, samples))
    assert flipped_up + flipped_down == 2  # exactly the two verdicts an older grader got "wrong"
    assert f"attempt 1: 2 flipped ({flipped_up} incorrect→correct, {flipped_down} correct→incorrect)" in result.output
    assert all(step["grade"]["grader_version"] == GRADER_VERSION for s in samples for step in s["steps"] if step["grade"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == KEEP and metrics["overall"] == score_episodes(episodes_of(samples, run), 2)[1]["overall"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["grader_version"] == GRADER_VERSION and manifest["regraded"][-1]["samples_changed"] == KEEP
    assert report(run).warnings == []
    before = _snapshot(run)
    again = runner.invoke(app, ["regrade", str(run), "--workers", "1"])
    assert again.exit_code == 0 and "0 samples rewritten" in again.output
    assert _snapshot(run) == before


def test_regrade_compare_folder_regrades_every_run_and_rebuilds_its_tables(small_reference):
    runner = CliRunner()
    result = runner.invoke(app, ["regrade", str(small_reference), "--workers", "1"])
    assert result.exit_code == 0, result.output
    spec = json.loads((small_reference / "compare.json").read_text())
    assert result.output.count("attempt 1: 2 flipped") == len(spec["rows"])
    tables = {name: (small_reference / name).read_bytes() for name in ("table.md", "table.csv", "table.tex")}
    for row in spec["rows"]:
        samples = _lines(small_reference / row["run_dir"] / "samples.jsonl")
        assert row["metrics"]["n"] == KEEP
        assert row["metrics"]["accuracy"][0]["value"] == sum(s["correct"][0] for s in samples) / KEEP
    assert report(small_reference).warnings == []
    assert {n: (small_reference / n).read_bytes() for n in tables} == tables  # report rebuilds the same tables
    before = _snapshot(small_reference.parent.parent)
    assert runner.invoke(app, ["regrade", str(small_reference), "--workers", "1"]).exit_code == 0
    assert _snapshot(small_reference.parent.parent) == before


def test_committed_reference_is_graded_by_the_current_graders():
    folder = next((REFERENCE / "compare").iterdir())
    assert report.__module__ == "harness.report"
    spec = json.loads((folder / "compare.json").read_text())
    for row in spec["rows"]:
        samples = _lines(folder / row["run_dir"] / "samples.jsonl")
        versions = {step["grade"].get("grader_version") for s in samples for step in s["steps"] if step.get("grade")}
        assert versions == {GRADER_VERSION}, row["run_dir"]


def test_regrade_of_a_folder_without_samples_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["regrade", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a comparison (compare.json) or eval run (samples.jsonl)" in " ".join(result.output.split())


def test_every_committed_comparison_regrades_to_itself(tmp_path):
    """Issue 24's bar on the whole committed reference: `harness regrade` on each comparison changes no
    byte of its runs, compare.json or tables (today's graders agree with every stored verdict)."""
    copy = tmp_path / "reference"
    # Adapter weights are not read by regrade or report (the training runs' logs and checkpoint states are).
    shutil.copytree(REFERENCE, copy, ignore=shutil.ignore_patterns("*.safetensors", "rollout-adapter", "study-pilot"))
    before = _snapshot(copy)
    folders = sorted((copy / "compare").iterdir()) + sorted(copy.glob("study-*/compare"))
    assert len(folders) >= 3
    for folder in folders:
        result = CliRunner().invoke(app, ["regrade", str(folder)])
        assert result.exit_code == 0, result.output
        assert "0 samples rewritten" in " ".join(result.output.split()), result.output
    changed = {name for name, data in _snapshot(copy).items() if before.get(name) != data}
    assert not {n for n in changed if not n.endswith((".png", ".pdf"))}, changed  # plot bytes follow matplotlib
