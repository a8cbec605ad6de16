"""Pilot of the real-model study (issue 23): which task setting makes the embedded model a fair subject.

For each candidate setting it samples first attempts of the base model on the setting's TRAIN split
(the study evaluates on test problems no run trained on, so the pilot never looks at them), greedy and
at temperature 1.0, and prints Acc@t1 with its 95% CI, generated tokens per attempt, the share cut at
max_new_tokens and seconds per attempt on the fastest backend here (`auto`). The study takes the
setting whose Acc@t1 at T = 1 lies in [15%, 60%] and whose episodes are cheapest.

Candidates: GSM8K at 256 new tokens; Countdown with 3 and with 4 numbers at 128; MATH levels 1-2 at 384.

    python benchmarks/study_pilot.py --problems 48 --out results/reference/study-pilot/pilot.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from cpu_backends import cpu_line

from harness.data import local_data_files
from harness.grading import GradingPool
from harness.manifest import build_manifest
from harness.method import get_method
from harness.metrics import self_correction_metrics
from harness.rollout import run_episodes
from harness.sampling import SamplingParams
from harness.rollout.backend import load_for_backend, make_generator, resolve_backend
from harness.task import get_task

CANDIDATES = {  # name: (task, max_new_tokens, which train items)
    "gsm8k@256": ("gsm8k", 256, lambda item: True),
    "countdown-3@128": ("countdown", 128, lambda item: len(item.meta["numbers"]) == 3),
    "countdown-4@128": ("countdown", 128, lambda item: len(item.meta["numbers"]) == 4),
    "math-l1-2@384": ("math", 384, lambda item: item.meta.get("level") in (1, 2)),
}


def pick(items, keep, count: int, seed: int):
    """`count` items passing `keep`, in a seeded order (the same ones on every run)."""
    import random

    chosen = [item for item in items if keep(item)]
    random.Random(seed).shuffle(chosen)
    return chosen[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    parser.add_argument("--out", default=None, help="write every row here (JSON), after each candidate")
    args = parser.parse_args()
    names = [n for n in CANDIDATES if not args.only or n in args.only.split(",")]

    backend = resolve_backend("auto", "cpu", args.model)
    loaded = load_for_backend(backend, args.model, "auto", "cpu")
    generator = make_generator(backend, loaded)
    print(f"CPU: {cpu_line()}; backend {backend} ({loaded.dtype})", flush=True)
    method = get_method("base")
    rows = json.loads(Path(args.out).read_text()) if args.out and Path(args.out).is_file() else {}
    tasks = {CANDIDATES[n][0] for n in names}
    manifest = build_manifest(
        {"candidates": names, "problems": args.problems, "split": "train", "backend": backend, "dtype": loaded.dtype,
         "max_new_tokens": {n: CANDIDATES[n][1] for n in names}}, args.seed,
        {"spec": args.model, "id": loaded.model_id, "weights_sha256": loaded.weights_sha256, "dtype": loaded.dtype},
        {f: h for t in sorted(tasks) for f, h in local_data_files(None, get_task(t).data_files("train")).items()})
    with GradingPool() as pool:
        for name in names:
            task_name, max_new, keep = CANDIDATES[name]
            task = get_task(task_name)
            items = pick(task.load("train"), keep, args.problems, args.seed)
            for label, temperature in (("greedy", 0.0), ("T=1", 1.0)):
                key = f"{name} {label}"
                if key in rows:
                    continue
                params = SamplingParams(temperature=temperature, max_new_tokens=max_new, seed=args.seed)
                start = time.perf_counter()
                episodes = run_episodes(task, method, items, generator, params, 1, pool)
                seconds = time.perf_counter() - start
                steps = [e.steps[0] for e in episodes]
                # Acc@t1 and its bootstrap CI (the metrics want two attempts: the first one twice)
                acc = self_correction_metrics([[e.correct[0]] * 2 for e in episodes]).accuracy[0]
                rows[key] = {"setting": name, "sampling": label, "problems": len(items), "acc": acc.value,
                             "low": acc.low, "high": acc.high,
                             "tokens_per_attempt": sum(s.completion_tokens for s in steps) / len(steps),
                             "cut_at_max": sum(not s.finished for s in steps) / len(steps),
                             "seconds_per_attempt": seconds / len(steps), "backend": backend, "dtype": loaded.dtype,
                             "cpu": cpu_line()}
                r = rows[key]
                print(f"{key:28s} Acc@t1 {100 * r['acc']:5.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}]  "
                      f"{r['tokens_per_attempt']:6.1f} tokens/attempt  cut {100 * r['cut_at_max']:4.1f}%  "
                      f"{r['seconds_per_attempt']:5.2f} s/attempt", flush=True)
                if args.out:
                    write_atomic(Path(args.out), rows)
    if args.out:  # the manifest of the run that wrote the file last (a resumed pilot keeps earlier rows)
        write_atomic(Path(args.out).with_name("manifest.json"), manifest)


def write_atomic(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
