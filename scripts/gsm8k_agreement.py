"""Our stored GSM8K verdicts against lm-eval gsm8k's flexible-extract exact match, on every attempt of
the given eval runs (no model: the attempts' texts are in samples.jsonl).

    .venv/bin/python scripts/gsm8k_agreement.py results/reference/runs/gsm8k-*-embedded-*

Prints the agreement per run and each disagreement (id, attempt, our verdict, the number each side read).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from harness.lmeval.reference import gsm8k_flexible_extract
from harness.task import get_task


def main(run_dirs: list[str]) -> None:
    judge = gsm8k_flexible_extract()
    task = get_task("gsm8k")
    for run in map(Path, run_dirs):
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        solutions = {item.id: item.meta["solution"] for item in task.load(config["split"], config.get("data_dir"))}
        agree = total = 0
        for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            attempts = [s for s in record["steps"] if s.get("kind", "attempt") == "attempt" and not s.get("carried")]
            for k, step in enumerate(attempts, 1):
                theirs, read = judge(solutions[record["id"]], step["text"])
                ours = bool(step["grade"]["correct"])
                total += 1
                agree += ours == theirs
                if ours != theirs:
                    print(f"  {record['id']} attempt {k}: ours {ours} ({step['grade']['extracted']!r}), "
                          f"flexible-extract {theirs} ({read!r})")
        print(f"{run.name}: {agree}/{total} generated attempts agree")


if __name__ == "__main__":
    main(sys.argv[1:])
