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

from harness.task import get_task


def flexible_extract():
    """lm-eval's gsm8k flexible-extract filter and exact_match metric, read from its own task YAML."""
    import lm_eval.api.metrics  # noqa: F401  registers exact_match
    import lm_eval.filters  # noqa: F401  registers regex / take_first
    import lm_eval.tasks
    from lm_eval.api.registry import get_filter, get_metric
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(Path(lm_eval.tasks.__file__).parent / "gsm8k" / "gsm8k.yaml", resolve_func=False)
    steps = next(f["filter"] for f in config["filter_list"] if f["name"] == "flexible-extract")
    regex = get_filter("regex")(**{k: v for k, v in steps[0].items() if k != "function"})
    metric = config["metric_list"][0]
    kwargs = {k: v for k, v in metric.items() if k not in ("metric", "aggregation", "higher_is_better")}
    exact_match = get_metric("exact_match")

    def judge(solution: str, response: str) -> tuple[bool, str]:
        extracted = regex.apply([[response]], [{}])[0][0]
        return bool(exact_match(predictions=[extracted], references=[solution], **kwargs)["exact_match"]), extracted

    return judge


def main(run_dirs: list[str]) -> None:
    judge = flexible_extract()
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
