"""`harness eval` end to end on a tiny model: the run store, resume after SIGKILL, the manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.store import RunStore

GSM8K_TEST_SHA256 = "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"  # shared/data/README.md
HARNESS = str(Path(sys.executable).with_name("harness"))
runner = CliRunner()


def ids_in(run: Path, torn_tail_allowed: bool = False) -> list[str]:
    text = (run / "samples.jsonl").read_text()
    if torn_tail_allowed:  # SIGKILL can cut a large write at a page boundary: resume cuts that line (tested below)
        text = text[: text.rfind("\n") + 1]
    return [json.loads(line)["id"] for line in text.splitlines()]


def test_eval_writes_the_run_and_a_rerun_comes_from_the_store(tmp_path, data_dir):
    run = tmp_path / "run"
    args = ["eval", "--model", "tiny-random", "--task", "gsm8k", "--limit", "4", "--max-new-tokens", "6",
            "--batch-size", "2", "--data-dir", str(data_dir), "--out", str(run)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "Acc@t1" in first.output and "Δi→c" in first.output and f"run written to {run}" in first.output
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "manifest.json", "metrics.json", "samples.jsonl"]
    assert ids_in(run) == [f"gsm8k/test/{i}" for i in range(4)]

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["config"]["limit"] == 4
    assert manifest["data_sha256"] == {"gsm8k/test.jsonl": GSM8K_TEST_SHA256}
    assert manifest["model"]["id"] == "tiny-random-v1" and len(manifest["model"]["weights_sha256"]) == 64
    assert manifest["packages"]["torch"] and manifest["packages"]["transformers"]
    assert len(manifest["git"]["commit"] or "") == 40
    assert manifest["host"]["cpus"] >= 1

    metrics = json.loads((run / "metrics.json").read_text())
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert metrics["n"] == 4
    assert metrics["overall"]["accuracy"][0]["value"] == sum(s["correct"][0] for s in samples) / 4

    before = (run / "samples.jsonl").read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "all from the store" in again.output
    assert (run / "samples.jsonl").read_bytes() == before
    assert len(json.loads((run / "manifest.json").read_text()).get("resumed", [])) == 0  # no model was loaded

    extended = runner.invoke(app, [*args[:6], "6", *args[7:]])  # --limit 6 extends the same run
    assert extended.exit_code == 0 and "2 generated now" in extended.output
    assert ids_in(run) == [f"gsm8k/test/{i}" for i in range(6)]


def test_changed_settings_in_the_same_folder_are_refused(tmp_path, data_dir):
    run = tmp_path / "run"
    base = ["eval", "--model", "tiny-random", "--limit", "1", "--max-new-tokens", "4", "--data-dir", str(data_dir),
            "--out", str(run)]
    assert runner.invoke(app, base).exit_code == 0
    changed = runner.invoke(app, [*base, "--temperature", "0.7"])
    assert changed.exit_code == 2 and "other settings (temperature)" in changed.output


@pytest.mark.parametrize("flag, value, message", [("--turns", "1", "--turns must be >= 2"), ("--limit", "0", "--limit must be >= 1"),
                                                  ("--method", "nope", "unknown method 'nope'")])
def test_bad_eval_options_exit_2_before_any_work(tmp_path, data_dir, flag, value, message):
    run = tmp_path / "run"
    result = runner.invoke(app, ["eval", "--model", "tiny-random", flag, value, "--data-dir", str(data_dir),
                                 "--out", str(run)])
    assert result.exit_code == 2 and message in result.output
    assert not run.exists()


def test_a_killed_run_resumes_with_every_problem_exactly_once(tmp_path, data_dir):
    """Episodes are stored as they finish: with 16 rows in flight and 30 problems, a kill mid-way leaves
    some stored (a store per batch of rows would have nothing yet), and resume generates only the rest."""
    run = tmp_path / "run"
    cmd = [HARNESS, "eval", "--model", "tiny-random", "--limit", "30", "--batch-size", "16", "--max-new-tokens", "24",
           "--data-dir", str(data_dir), "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = run / "samples.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (samples.is_file() and samples.read_text().count("\n") >= 3):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = ids_in(run, torn_tail_allowed=True)
    assert 3 <= len(partial) < 30, "the run must be killed mid-way for this test to mean anything"

    resume = [*cmd[:7], "4", *cmd[8:]]  # the batch size is not part of a run's identity: resume narrower
    done = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{30 - len(partial)} generated now" in done.stdout
    assert ids_in(run) == [f"gsm8k/test/{i}" for i in range(30)]
    assert len(json.loads((run / "manifest.json").read_text())["resumed"]) == 1


def test_a_torn_last_line_is_cut_on_open(tmp_path):
    store = RunStore(tmp_path)
    store.append([{"id": "a", "correct": [True, False]}, {"id": "b", "correct": [False, False]}])
    with (tmp_path / "samples.jsonl").open("a") as fh:
        fh.write('{"id": "c", "corr')  # what SIGKILL in the middle of a write could leave
    assert list(store.load_samples()) == ["a", "b"]
    assert (tmp_path / "samples.jsonl").read_text().endswith("\n")
    store.append([{"id": "c", "correct": [True, True]}])
    assert list(store.load_samples()) == ["a", "b", "c"]
