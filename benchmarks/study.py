"""The real-model study (issue 23): SCoRe, A2C, STaR and Pair-SFT trained on the embedded model under one
rollout-token budget on GSM8K's train split, then compared with `base` and `self-refine` on held-out test
problems. The settings below are the study's: COMMON for every run, METHODS for what each paper sets.
Decisions, their reasons and the result are in the README (section "The first trained result").

    python benchmarks/study.py train     # the runs one after another: a started run resumes, a finished one is skipped
    python benchmarks/study.py status    # where each run stands
    python benchmarks/study.py compare   # base, self-refine and the finished runs on 200 test problems

Runs live in results/reference/study-gsm8k/runs/<method>/ and are resumable across sessions (SIGTERM
saves a checkpoint); a finished run says so in its last checkpoint (`finished`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness.checkpoint import checkpoints, latest_checkpoint
from harness.training.config import TrainConfig, load_train_config

STUDY = Path("results/reference/study-gsm8k")
BUDGET = 120_000  # generated rollout tokens per method (about 24 SCoRe steps at ~5,000 tokens each)

COMMON = dict(
    task="gsm8k", split="train", model="embedded", seed=0,
    max_new_tokens=256, temperature=1.0, top_p=1.0,  # the pilot's setting; SCoRe samples at T = 1
    rollout_tokens=BUDGET, max_steps=200,  # the budget ends every RL run long before this cap
    problems_per_step=8, samples_per_problem=2, grad_accum=8, batch_size=16,
    # SCoRe Table 5's lr (5e-6, full fine-tuning) x 10 for LoRA, whose best lr is about ten times full
    # fine-tuning's (Schulman et al., 2025, "LoRA Without Regret"); one lr for all four methods.
    lr=5e-5, lora=dict(rank=8, alpha=16),  # every linear layer; rank 8 keeps the adapter under 20 MB
    backend="llamacpp",  # the fastest rollouts on this CPU; weighed by truncated importance weights
    checkpoint_every=1, report_to=["tensorboard"],
)

# What each method sets beyond COMMON: its paper's defaults (SCoRe Table 5; A2C the harness's documented
# choices); the two-stage ones their stage boundary at a third of the ~24 steps the budget buys.
METHODS = {
    "star": dict(method_options=dict(iterations=3, steps_per_iteration=4), max_steps=12),
    "pair-sft": dict(method_options=dict(samples=4, epochs=1)),
    "score": dict(method_options=dict(alpha=10.0, beta1=0.01, beta2=0.1, stage1_steps=8)),
    "a2c2stage": dict(method_options=dict(stage1_steps=8)),
}


def study_config(method: str) -> TrainConfig:
    return load_train_config(None, None, [], {**COMMON, **METHODS[method], "method": method,
                                              "out": str(STUDY / "runs" / method)})


def run_state(method: str) -> dict | None:
    """The run's last checkpoint state (None: not started)."""
    found = latest_checkpoint(STUDY / "runs" / method, only=("trainer_state.json",))
    return json.loads((found / "trainer_state.json").read_text()) if found else None


def train_all(only: list[str]) -> None:
    from harness.errors import Interrupted
    from harness.training.loop import train
    from harness.training.runlog import status_line

    for method in only:
        state = run_state(method)
        if state and state.get("finished"):
            print(f"{method}: finished at step {state['step']} ({state['rollout_tokens']:,} tokens); skipped", flush=True)
            continue
        config = study_config(method)
        started = time.perf_counter()

        def show(step: int, total: int, logs: dict) -> None:
            where = "" if "collect_share" in logs else f" step {step}"
            print(f"{method}{where}: {status_line(logs, BUDGET)}  ({time.perf_counter() - started:.0f} s)", flush=True)

        try:
            run = train(config, resume=bool(checkpoints(config.run_dir())), progress=show)
        except Interrupted as stopped:  # SIGTERM/SIGINT: the run saved a checkpoint; rerun to continue
            raise SystemExit(f"{method}: {stopped}") from None
        print(f"{method}: done in {time.perf_counter() - started:.0f}s -> {run}", flush=True)


EVALUATION = dict(task="gsm8k", split="test", limit=200, turns=2, seed=0, max_new_tokens=256, temperature=0.0)


def compare_all(only: list[str]) -> None:
    """`harness compare` of base, self-refine and the finished runs (each checkpoint as its method's paper
    selects it), greedy, on the first 200 test problems; rows already stored are not generated again."""
    from harness.cli import app

    unfinished = [m for m in only if not (run_state(m) or {}).get("finished")]
    if unfinished:
        raise SystemExit(f"not finished yet: {', '.join(unfinished)} (python benchmarks/study.py status)")
    args = ["compare", "--methods", "base,self-refine", "--results-dir", str(STUDY), "--out", str(STUDY / "compare")]
    args += [f"--checkpoints={STUDY / 'runs' / m}" for m in only]
    for key, value in EVALUATION.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    app(args, prog_name="harness")


def status(only: list[str]) -> None:
    for method in only:
        state = run_state(method)
        if state is None:
            print(f"{method}: not started")
        else:
            print(f"{method}: step {state['step']}, {state.get('rollout_tokens', 0):,}/{BUDGET:,} tokens"
                  f"{', finished' if state.get('finished') else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("train", "status", "compare"))
    parser.add_argument("--only", default=",".join(METHODS), help="comma-separated methods, in order")
    args = parser.parse_args()
    only = [m for m in args.only.split(",") if m]
    unknown = [m for m in only if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s): {', '.join(unknown)}; known: {', '.join(METHODS)}")
    {"train": train_all, "status": status, "compare": compare_all}[args.action](only)


if __name__ == "__main__":
    main()
