"""`harness train` under FSDP (configs/accelerate/fsdp.yaml, 2 CPU processes over gloo), end to end: rollouts
on gathered weights, sharded updates, checkpoints gathered to one file. A run stopped after 2 steps and
resumed to 4, and a run killed (SIGKILL to every process) at a seeded moment, often inside a checkpoint
save, then resumed, end with the same weights as an uninterrupted 4-step run, bit for bit: the same
processes reduce in the same order, and each process samples with its own seed whatever the restart.
(tests/test_ddp.py compares one FSDP update with one process's.)"""

from __future__ import annotations

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

from harness.checkpoint import latest_checkpoint

TESTS = Path(__file__).resolve().parent
CONFIG = TESTS.parent / "configs" / "accelerate" / "fsdp.yaml"
ACCELERATE = Path(sys.executable).parent / "accelerate"
SETS = ["task=toy-digit", "max_new_tokens=4", "problems_per_step=4", "samples_per_problem=2", "checkpoint_every=1",
        "method_options.stage1_steps=2"]


def launch(out: Path, steps: int, resume: bool = False, seed: int = 0) -> subprocess.Popen:
    """`accelerate launch` of the CLI (tests/slow_writes.py: the toy task registered, saves slowed a little)."""
    args = ["train", "--resume", str(out)] if resume else \
        ["train", "--method", "score", "--preset", "cpu-tiny", "--out", str(out), *[a for s in SETS for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLOW_WRITES_SEED": str(seed)}
    return subprocess.Popen([str(ACCELERATE), "launch", "--config_file", str(CONFIG), "--num_processes", "2",
                             str(TESTS / "slow_writes.py"), *args, "--max-steps", str(steps)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def weights(run: Path) -> dict[str, torch.Tensor]:
    found = latest_checkpoint(run)
    assert found is not None and found.name == "step-000004", found
    return load_file(str(found / "weights.safetensors"))


@pytest.mark.slow
def test_fsdp_runs_stopped_or_killed_resume_to_the_uninterrupted_weights(tmp_path):
    straight = tmp_path / "straight"
    finish(launch(straight, 4))
    reference = weights(straight)
    assert any(v.abs().sum() > 0 for v in reference.values())

    stopped = tmp_path / "stopped"  # 2 steps, then resumed to 4
    finish(launch(stopped, 2))
    assert latest_checkpoint(stopped).name == "step-000002"
    finish(launch(stopped, 4, resume=True))

    killed = tmp_path / "killed"  # SIGKILL to every process once a save is under way, then resumed
    proc = launch(killed, 4, seed=1)
    rng, deadline = random.Random("fsdp-kill"), time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list((killed / "checkpoints").glob(".step-*")):  # a save has begun
            time.sleep(rng.uniform(0, 0.2))
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    finish(launch(killed, 4, resume=True))
    assert not list((killed / "checkpoints").glob(".step-*"))  # the killed save's temp folder is cleaned

    for run in (stopped, killed):
        found = weights(run)
        assert found.keys() == reference.keys()
        for key in reference:
            assert torch.equal(found[key], reference[key]), (run.name, key)
