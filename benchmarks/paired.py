"""Shared by the paired agreement benchmarks (dtype_agreement.py, backend_agreement.py): greedy first
attempts of one setting after another on the same problems, then both accuracies with 95% paired
bootstrap CIs, McNemar's exact p on the discordant problems, identical attempts and tokens/s."""

from __future__ import annotations

import json
import time

from harness.metrics import self_correction_metrics
from harness.rollout import run_episodes


def first_attempts(name: str, task, method, items, generator, params, pool, note: str = "") -> dict:
    """One setting's greedy first attempts, timed; printed as they finish."""
    start = time.perf_counter()
    episodes = run_episodes(task, method, items, generator, params, 1, pool)
    seconds = time.perf_counter() - start
    tokens = sum(e.steps[0].completion_tokens for e in episodes)
    print(f"{name}: {len(items)} problems in {seconds:.0f} s, {tokens / seconds:.1f} generated tokens/s {note}", flush=True)
    return {"correct": [e.correct[0] for e in episodes], "text": [e.steps[0].text for e in episodes],
            "seconds": seconds, "tokens_per_s": tokens / seconds}


def report(runs: dict[str, dict], heading: str, out: str | None = None) -> None:
    """The two runs (in insertion order: first, second) compared problem by problem."""
    (first, a), (second, b) = runs.items()
    metrics = self_correction_metrics(list(zip(a["correct"], b["correct"])))
    same = sum(x == y for x, y in zip(a["text"], b["text"]))
    acc_a, acc_b = metrics.accuracy
    print(heading)
    width = max(len(first), len(second))
    print(f"accuracy {first:{width}s}: {acc_a.value:.3f} [{acc_a.low:.3f}, {acc_a.high:.3f}]")
    print(f"accuracy {second:{width}s}: {acc_b.value:.3f} [{acc_b.low:.3f}, {acc_b.high:.3f}]")
    print(f"{second} - {first}: {metrics.delta.value:+.3f} [{metrics.delta.low:+.3f}, {metrics.delta.high:+.3f}]  "
          f"McNemar exact p = {metrics.mcnemar_p:.3f}  (right only in {second}: {metrics.incorrect_to_correct.value:.3f}, "
          f"only in {first}: {metrics.correct_to_incorrect.value:.3f})")
    print(f"identical attempts: {same}/{len(a['correct'])}")
    if out:
        with open(out, "w") as fh:
            json.dump({"problems": len(a["correct"]), "metrics": metrics.to_dict(), "identical": same, "runs": runs},
                      fh, indent=1)
