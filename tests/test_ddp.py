"""Two CPU processes (gloo) under `accelerate launch` compute the same update as one process on the
same global batch: DDP averages the per-process mean losses' gradients, which equals the mean over
the whole batch because the shards are equal and baselines stay within a problem."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import toy_task  # noqa: F401
from harness.grading import GradingPool
from harness.method import get_method
from harness.models import load_model
from harness.rollout import HFGenerator, run_episodes
from harness.sampling import SamplingParams
from harness.task import Grade, get_task

SCRIPT = Path(__file__).with_name("ddp_update.py")
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.slow
@pytest.mark.parametrize("method, launch, full", [("score", "ddp", False), ("a2c2stage", "ddp", False),
                                                  ("score", "fsdp", False), ("a2c2stage", "fsdp", False),
                                                  ("score", "fsdp", True), ("pair-sft", "ddp", False),
                                                  ("pair-sft", "fsdp", False)])
def test_two_process_update_equals_one_process(tmp_path, method, launch, full):
    """DDP, and FSDP (harness/training/fsdp.py: layers and the log-prob root sharded over 2 gloo processes;
    gradients and weights gathered for the comparison), with LoRA and (full) full fine-tuning, whose
    frozen reference is sharded too and whose tied embedding / LM head lives in the root unit."""
    tiny = load_model("tiny-random")
    task = get_task("toy-digit")
    with GradingPool(workers=1) as pool:
        episodes = run_episodes(task, get_method("base"), [i for i in task.load("train")[:4] for _ in range(2)],
                                HFGenerator(tiny.model, tiny.tokenizer, 8),
                                SamplingParams(temperature=1.0, max_new_tokens=4, seed=5), 2, pool)
    for i, episode in enumerate(episodes):  # mixed rewards, so the policy gradient is not zero
        episode.attempts[0].grade = Grade(i % 3 == 0, None, "set by test")
        episode.attempts[1].grade = Grade(i % 2 == 0, None, "set by test")
    (tmp_path / "episodes.pkl").write_bytes(pickle.dumps(episodes))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    sets = ["lora.enabled=false"] if full else []
    single = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "episodes.pkl"), str(tmp_path / "one.st"), method, *sets],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    config = REPO / "configs" / "accelerate" / f"{launch}.yaml"  # the launch lines the README gives
    double = subprocess.run([str(BIN / "accelerate"), "launch", "--config_file", str(config), "--num_processes", "2",
                             "--mixed_precision", "no", str(SCRIPT),
                             str(tmp_path / "episodes.pkl"), str(tmp_path / "two.st"), method, *sets],
                            capture_output=True, text=True, env=env, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = load_file(str(tmp_path / "one.st")), load_file(str(tmp_path / "two.st"))
    assert (int(one.pop("world_size")), int(two.pop("world_size"))) == (1, 2)
    assert (int(one.pop("sharded")), int(two.pop("sharded"))) == (0, int(launch == "fsdp"))
    assert one.keys() == two.keys() and any(k.startswith("grad.") for k in one)
    assert max(float(v.abs().max()) for k, v in one.items() if k.startswith("grad.")) > 1e-6  # a real gradient
    if method == "a2c2stage":
        # The critic's value head lives outside DDP (its gradients are averaged by hand) and starts at zero:
        # after one step it has moved, by the same amount with 1 and 2 processes (checked below).
        assert float(one["weight.critic.head.weight"].abs().max()) > 1e-6
    for key in one:
        # Gradients are compared everywhere (summing in another order: up to ~4e-8 apart, 2e-4 relative).
        # AdamW's first step moves a weight by lr * g / (|g| + eps): where |g| is near eps (1e-8) that float
        # noise decides the step (a 1e-10 change of a 9e-9 gradient moved a weight 3e-5 in stage I, where
        # only attempt 2 drives the policy), so weights are compared where |g| >= 1e-6 (100 eps): there a
        # step is lr * sign(g) within 1%, tolerance 1e-5 (a thousandth of lr); a wrong sign or a missed step is 1e-2.
        if key.startswith("weight."):
            grad = one.get("grad." + key.removeprefix("weight."))
            where = grad.abs() >= 1e-6 if grad is not None else torch.ones_like(one[key], dtype=torch.bool)
            assert torch.allclose(one[key][where], two[key][where], atol=1e-5, rtol=1e-4), key
        else:
            assert torch.allclose(one[key], two[key], atol=1e-6, rtol=1e-4), key
