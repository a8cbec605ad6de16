"""`harness train` under FSDP (configs/accelerate/fsdp.yaml, 2 CPU processes over gloo), end to end: rollouts
on gathered weights, sharded updates, sharded checkpoints (each process writes its shards with
torch.distributed.checkpoint; the main process renames the folder into place). A run stopped after 2 steps and
resumed to 4, and a run killed (SIGKILL to every process) at a seeded moment, often inside a checkpoint
save, then resumed, end with the same weights as an uninterrupted 4-step run, bit for bit: the same
processes reduce in the same order, and each process samples with its own seed whatever the restart.
A sharded checkpoint loads whole in one process (`harness eval --checkpoint`) and resumes there, each
tensor as the two processes wrote it. (tests/test_ddp.py compares one FSDP update with one process's.)"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from harness.checkpoint import checkpoints, latest_checkpoint, load_state, load_weights

TESTS = Path(__file__).resolve().parent
CONFIG = TESTS.parent / "configs" / "accelerate" / "fsdp.yaml"
ACCELERATE = Path(sys.executable).parent / "accelerate"
SETS = ["task=toy-digit", "max_new_tokens=4", "problems_per_step=4", "samples_per_problem=2", "checkpoint_every=1"]
METHOD_SETS = {"score": ["method_options.stage1_steps=2"], "pair-sft": []}  # pair-sft: one epoch, 9 steps here


def launch(out: Path, steps: int, resume: bool = False, seed: int = 0, method: str = "score") -> subprocess.Popen:
    """`accelerate launch` of the CLI (tests/slow_writes.py: the toy task registered, saves slowed a little)."""
    sets = [a for s in SETS + METHOD_SETS[method] for a in ("--set", s)]
    args = ["train", "--resume", str(out)] if resume else \
        ["train", "--method", method, "--preset", "cpu-tiny", "--out", str(out), *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLOW_WRITES_SEED": str(seed)}
    return subprocess.Popen([str(ACCELERATE), "launch", "--config_file", str(CONFIG), "--num_processes", "2",
                             str(TESTS / "slow_writes.py"), *args, "--max-steps", str(steps)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_once_saving(proc: subprocess.Popen, run: Path, seed: str) -> None:
    """SIGKILL to every process at a seeded moment just after a checkpoint save has begun, before the end."""
    rng, deadline = random.Random(seed), time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list((run / "checkpoints").glob(".step-*")):  # a save has begun
            time.sleep(rng.uniform(0, 0.2))
            break
        time.sleep(0.01)
    # every process of the tree: torch's launcher starts each worker in a session of its own
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for member in tree:
        member.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)
    proc.communicate()
    assert len(tree) >= 3, tree  # the launcher and both workers
    found = latest_checkpoint(run)
    assert found is None or not json.loads((found / "trainer_state.json").read_text())["finished"], found


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def weights(run: Path, step: int = 4) -> dict[str, torch.Tensor]:
    found = latest_checkpoint(run)
    assert found is not None and found.name == f"step-{step:06d}", found
    assert not (found / "weights.safetensors").exists()  # sharded: one file of weights per process
    assert len(list((found / "weights.dcp").glob("*.distcp"))) == 2
    return load_weights(found)


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
    kill_once_saving(launch(killed, 4, seed=1), killed, "fsdp-kill")
    finish(launch(killed, 4, resume=True))
    assert not list((killed / "checkpoints").glob(".step-*"))  # the killed save's temp folder is cleaned

    for run in (stopped, killed):
        found = weights(run)
        assert found.keys() == reference.keys()
        for key in reference:
            assert torch.equal(found[key], reference[key]), (run.name, key)


@pytest.mark.slow
def test_an_fsdp_sft_run_killed_while_saving_resumes_to_the_uninterrupted_weights(tmp_path):
    """pair-sft: the collection (stored in sft/) is not repeated on resume, and the epoch's batches are
    dealt to the processes as before, so the resumed run ends on the same weights, bit for bit."""
    straight = tmp_path / "straight"
    finish(launch(straight, 4, method="pair-sft"))
    reference = weights(straight, 9)
    killed = tmp_path / "killed"
    kill_once_saving(launch(killed, 4, seed=2, method="pair-sft"), killed, "fsdp-sft-kill")
    finish(launch(killed, 4, resume=True, method="pair-sft"))
    found = weights(killed, 9)
    assert found.keys() == reference.keys()
    assert all(torch.equal(found[key], reference[key]) for key in reference)


def one_process_trainer(run: Path):
    """The run's trainer in this process (no process group): what a 1-process resume builds."""
    import toy_task  # noqa: F401  (registers toy-digit)
    from harness.training.config import load_train_config
    from harness.training.trainer import Trainer

    config = load_train_config(None, str(run / "config.yaml"), [], {"out": str(run)})
    return Trainer(config, run)


@pytest.mark.slow
def test_a_sharded_checkpoint_loads_whole_in_one_process(tmp_path):
    run = tmp_path / "run"
    finish(launch(run, 2))
    folder = latest_checkpoint(run)
    assert [f.name for f in checkpoints(run)] == ["step-000001", "step-000002"]
    trainer = one_process_trainer(run)
    before = {n: p.detach().clone() for n, p in trainer.policy_params.items()}
    trainer.load(folder)
    saved = load_weights(folder)
    assert saved.keys() == trainer.policy_params.keys()
    assert any(not torch.equal(before[n], saved[n]) for n in saved)  # two steps moved the LoRA weights
    for name, param in trainer.policy_params.items():
        assert torch.equal(param.detach(), saved[name]), name
    # AdamW's moments: both halves of every sharded tensor are back, and each has seen two steps
    state = trainer.optimizer.state_dict()["state"]
    assert len(state) == len(trainer.policy_params)
    assert all(float(entry["step"]) == 2.0 for entry in state.values())
    assert all(half.gt(0).any() for entry in state.values() for half in entry["exp_avg_sq"].chunk(2))
    assert trainer.optimizer.param_groups[0]["lr"] == load_state(folder, "optimizer_groups")[0]["lr"]
    assert trainer.step == 2
