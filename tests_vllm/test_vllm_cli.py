"""`harness eval` and `harness train` with --backend vllm, end to end through the CLI (each command in
its own process, as a user runs it: vLLM's engine lives and dies with it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"}, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _samples(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


def test_eval_vllm_matches_hf_and_gets_its_own_run(wide_model, data_dir, tmp_path):
    common = ["eval", "--model", str(wide_model), "--limit", "3", "--max-new-tokens", "12", "--dtype", "float32",
              "--data-dir", str(data_dir)]
    harness(*common, "--backend", "hf", cwd=tmp_path)
    harness(*common, "--backend", "vllm", cwd=tmp_path)
    runs = sorted((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 2  # the vllm run has its own identity, so its own folder
    streams = [[[(s["text"], s["completion_tokens"], s["finished"]) for s in e["steps"]] for e in _samples(r)] for r in runs]
    assert streams[0] == streams[1] and len(streams[0]) == 3


@pytest.mark.slow
def test_train_score_with_vllm_rollouts(wide_model, data_dir, tmp_path):
    out = tmp_path / "run"
    harness("train", "--method", "score", "--backend", "vllm", "--model", str(wide_model), "--max-steps", "3",
            "--preset", "cpu-tiny", "--set", "max_new_tokens=12", "--set", "lr=0.05", "--set", "dtype=float32",
            "--data-dir", str(data_dir), "--out", str(out), cwd=tmp_path)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["policy_version"] for row in log] == [0, 1, 2]  # each step sampled from the previous step's adapter
    gaps = [row["logprob_gap"] for row in log]
    assert all(0 <= g < 1e-3 for g in gaps), gaps  # trainer and engine agree on the sampled tokens' log-probs
    # The adapter the last rollout came from (the one after step 3 is saved when a rollout needs it).
    assert sorted(p.name for p in (out / "rollout-adapter").iterdir()) == ["v2"]
    assert (out / "rollout-adapter" / "v2" / "adapter_model.safetensors").is_file()
