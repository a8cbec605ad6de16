"""`harness grade` and `harness tasks` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app

runner = CliRunner()

LINES = {
    "gsm8k": [
        {"answer": "18", "response": "9 eggs at $2 each: $18.\nThe answer is 18."},
        {"answer": "1,000", "response": "#### 1,000"},
        {"answer": "5", "response": "I think it is 6."},
    ],
    "math": [
        {"answer": r"\frac{14}{3}", "response": "Final Answer: The final answer is $\\dfrac{14}{3}$. I hope it is correct."},
        {"answer": "90^\\circ", "response": "So the angle is \\boxed{90}."},
        {"answer": "[-2,7]", "response": "\\boxed{[-2,7)}"},
    ],
    "math500": [
        {"answer": r"\left( 3, \frac{\pi}{2} \right)", "response": "\\boxed{(3, \\pi/2)}"},
        {"answer": "p - q", "response": "Final Answer: The final answer is $q - p$. I hope it is correct."},
    ],
    "countdown": [
        {"answer": "(25 - 5) * 5", "numbers": [25, 5, 5], "target": 100, "response": "<answer>(25 - 5) * 5</answer>"},
        {"answer": "(25 - 5) * 5", "numbers": [25, 5, 5], "target": 100, "response": "<answer>25 * 4</answer>"},
    ],
}
VERDICTS = {"gsm8k": [True, True, False], "math": [True, True, False], "math500": [True, False], "countdown": [True, False]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("task", list(LINES))
def test_grade_writes_input_plus_verdicts_in_order(tmp_path, task):
    src = write_jsonl(tmp_path / "in.jsonl", LINES[task])
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["grade", "--task", task, str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in rows] == VERDICTS[task]
    for given, written in zip(LINES[task], rows):
        assert {k: written[k] for k in given} == given  # input fields kept as they were
        assert set(written) == set(given) | {"correct", "extracted", "reason", "grader_version"}
    n = len(rows)
    assert f"graded n={n}: {sum(VERDICTS[task])} correct" in result.output


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"answer": "1", "response": "1"}, "not json"], "in.jsonl:2: invalid JSON"),
        ([{"answer": "1"}], "in.jsonl:1: missing field(s) response"),
        ([{"answer": "1", "response": 7}], "in.jsonl:1: 'response' must be a string"),
        ([{"answer": "one", "response": "1"}], "in.jsonl:1: gold answer 'one' is not a number"),
    ],
)
def test_bad_input_exits_2_with_file_line_and_writes_nothing(tmp_path, rows, message):
    src = tmp_path / "in.jsonl"
    src.write_text("".join((json.dumps(r) if isinstance(r, dict) else r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["grade", "--task", "gsm8k", str(src), "--out", str(out)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_countdown_lines_need_numbers_and_target(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"answer": "1+2", "response": "<answer>1+2</answer>", "target": 3}])
    result = runner.invoke(app, ["grade", "--task", "countdown", str(src)])
    assert result.exit_code == 2 and "missing field(s) numbers" in result.output


def test_unknown_task_is_one_line_error(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"answer": "1", "response": "1"}])
    result = runner.invoke(app, ["grade", "--task", "gsm9k", str(src)])
    assert result.exit_code == 2 and "unknown task 'gsm9k'; known:" in result.output


def test_default_output_path_sits_beside_the_input(tmp_path):
    src = write_jsonl(tmp_path / "answers.jsonl", LINES["gsm8k"])
    assert runner.invoke(app, ["grade", "--task", "gsm8k", str(src)]).exit_code == 0
    assert (tmp_path / "answers.graded.jsonl").is_file()


def test_tasks_lists_all_four_with_sizes(data_dir):
    result = runner.invoke(app, ["tasks"], env={"HARNESS_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0
    for text in ("gsm8k", "train 7473, test 1319", "math500", "train 12000, test 500", "countdown", "train 7500, test 5000"):
        assert text in result.output


def test_console_script_grades_in_a_fresh_process(tmp_path):
    """The installed `harness` entry point end to end (worker processes included)."""
    rows = [{"answer": str(n), "response": f"So the total is {n + (n % 4 == 3)}."} for n in range(12)]
    src, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "graded.jsonl"
    exe = Path(sys.executable).with_name("harness")
    done = subprocess.run([str(exe), "grade", "--task", "gsm8k", str(src), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "graded n=12: 9 correct, accuracy 75.0%" in done.stdout
