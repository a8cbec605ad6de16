"""Killed runs resume to exactly the weights of an uninterrupted run.

Real processes (`tests/slow_writes.py`: the CLI with checkpoint saves and log lines slowed by seeded
random pauses, so kills often land inside them) are stopped at seeded random moments, by SIGKILL and by
SIGTERM (which must save and exit 143), and resumed with --resume by relative and absolute path, in the
default results/ location and in --out folders. Their final checkpoint must equal, bit for bit, that of
the same run trained without interruption. A damaged latest checkpoint and a torn log line are repaired
on resume (the run continues from the previous checkpoint), also bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import toy_task  # noqa: F401  (registers the toy-digit task)
from harness.checkpoint import latest_checkpoint
from harness.training.config import load_train_config
from harness.training.loop import train

LAUNCHER = Path(__file__).resolve().parent / "slow_writes.py"
SETS = {"task": "toy-digit", "max_new_tokens": 4, "problems_per_step": 4, "samples_per_problem": 2,
        "checkpoint_every": 2}
# stage1_steps fixed: by default it is a third of max_steps, which the run trained to 5 steps below sees otherwise.
METHOD_SETS = {"score": {"method_options.stage1_steps": 2}, "a2c2stage": {"method_options.stage1_steps": 2},
               "rrr": {"method_options.group_size": 2},
               "star": {"method_options.iterations": 2, "method_options.steps_per_iteration": 3}}
STEPS = 6


def _sets(method: str) -> list[str]:
    return [f"{k}={v}" for k, v in {**SETS, **METHOD_SETS[method]}.items()]


def reference(method: str, out: Path) -> Path:
    """The uninterrupted run, in this process."""
    return train(load_train_config("cpu-tiny", None, _sets(method), {"method": method, "out": str(out),
                                                                      "max_steps": STEPS}))


def same_state(a: Path, b: Path) -> None:
    """Bit-identical weights and method state (a2c2stage: its critic) in two checkpoints."""
    assert a.name == b.name == f"step-{STEPS:06d}"
    for part in ("weights", "method"):
        left, right = load_file(str(a / f"{part}.safetensors")), load_file(str(b / f"{part}.safetensors"))
        assert left.keys() == right.keys(), part
        for key in left:
            assert torch.equal(left[key], right[key]), (part, key)


def logged_steps(run: Path) -> list[int]:
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().split("\n")[:-1] if line.strip()]


def start(cwd: Path, args: list[str], seed: int) -> subprocess.Popen:
    env = {**os.environ, "SLOW_WRITES_SEED": str(seed)}
    return subprocess.Popen([sys.executable, str(LAUNCHER), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop_during_step(proc: subprocess.Popen, run: Path | None, cwd: Path, rng: random.Random, sig: int,
                     after_lines: int) -> tuple[Path, str]:
    """Once the run has logged `after_lines` steps, wait a random moment (inside the next step, its log
    line or its checkpoint) and send `sig`. Returns the run folder and the process's stderr."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if run is None:  # the default location: results/runs/train-<method>-...
            found = sorted((cwd / "results" / "runs").glob("train-*"))
            run = found[0] if found else None
        if run is not None and len(logged_steps(run)) >= after_lines:
            break
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is None:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=600)
    assert run is not None, stderr
    return run, stderr


@pytest.mark.slow
@pytest.mark.parametrize("method, where", [("score", "default"), ("a2c2stage", "out"), ("star", "default"),
                                           ("rrr", "out")])
def test_killed_runs_resume_to_the_uninterrupted_weights(tmp_path, method, where):
    straight = reference(method, tmp_path / "straight")
    cwd = tmp_path / "work"
    cwd.mkdir()
    rng = random.Random(f"kill:{method}")
    args = ["train", "--method", method, "--preset", "cpu-tiny", "--max-steps", str(STEPS)]
    for pair in _sets(method):
        args += ["--set", pair]
    out = cwd / "runs" / "killed" if where == "out" else None
    first = start(cwd, args + (["--out", str(out)] if out else []), seed=1)
    run, _ = stop_during_step(first, out, cwd, rng, signal.SIGKILL, after_lines=1)
    # SIGTERM: the run saves what it did and exits 143 with one line (unless it had already finished).
    relative = os.path.relpath(run, cwd)
    second = start(cwd, ["train", "--resume", relative], seed=2)
    _, stderr = stop_during_step(second, run, cwd, rng, signal.SIGTERM, after_lines=len(logged_steps(run)) + 1)
    if second.returncode != 0:
        assert second.returncode == 143, stderr
        assert stderr.strip().splitlines()[-1].startswith("stopped: stopped by SIGTERM"), stderr
        assert latest_checkpoint(run).name == f"step-{logged_steps(run)[-1]:06d}"
    third = start(cwd, ["train", "--resume", relative], seed=3)
    stop_during_step(third, run, cwd, rng, signal.SIGKILL, after_lines=len(logged_steps(run)) + 1)
    last = subprocess.run([sys.executable, str(LAUNCHER), "train", "--resume", str(run.resolve())], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, last.stderr
    same_state(latest_checkpoint(straight), latest_checkpoint(run))
    assert logged_steps(run) == list(range(1, STEPS + 1))
    assert not list((run / "checkpoints").glob(".step-*"))  # temp folders of killed saves are cleaned


def test_damaged_latest_checkpoint_and_torn_log_resume_from_the_previous_checkpoint(tmp_path, capsys):
    """score, 6 steps: a run stopped at step 5 with checkpoints every step keeps step-4 and step-5; its
    step-5 weights are damaged and a torn line is appended to its log. Resuming warns about both, moves
    step-5 aside, continues from step-4, and ends bit-identical to the uninterrupted run."""
    straight = reference("score", tmp_path / "straight")
    run = tmp_path / "damaged"
    config = load_train_config("cpu-tiny", None, _sets("score") + ["checkpoint_every=1"],
                               {"method": "score", "out": str(run), "max_steps": 5})
    train(config)
    weights = run / "checkpoints" / "step-000005" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8] ^= 0xFF
    weights.write_bytes(bytes(data))
    with (run / "log.jsonl").open("a") as fh:
        fh.write('{"step": 6, "r1": 0.')
    (run / "checkpoints" / ".step-leftover").mkdir()
    capsys.readouterr()
    config.max_steps = STEPS
    train(config, resume=True)
    warnings = capsys.readouterr().err
    assert "step-000005: damaged (weights.safetensors changed" in warnings
    assert "log.jsonl: cut a torn last line" in warnings
    assert (run / "checkpoints" / "damaged-step-000005").is_dir()
    assert not (run / "checkpoints" / ".step-leftover").exists()
    assert logged_steps(run) == list(range(1, STEPS + 1))
    # checkpoint_every differs (1 vs 2) but changes nothing the weights depend on.
    same_state(latest_checkpoint(straight), latest_checkpoint(run))
