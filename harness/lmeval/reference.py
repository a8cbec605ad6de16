"""lm-eval's own GSM8K scoring, read from its task YAML: the judge we check our grader against
(tests/test_lmeval.py, scripts/gsm8k_agreement.py). Imports lm-eval when called."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def gsm8k_config() -> dict[str, Any]:
    """lm-eval's gsm8k.yaml as it ships (its filters and metric, unresolved)."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(Path(lm_eval.tasks.__file__).parent / "gsm8k" / "gsm8k.yaml", resolve_func=False)


def gsm8k_flexible_extract(config: dict[str, Any] | None = None) -> Callable[[str, str], tuple[bool, str]]:
    """judge(solution, response) -> (exact match, the answer read): gsm8k's flexible-extract filter (its
    regex, first match) and its exact_match metric with the YAML's arguments."""
    import lm_eval.api.metrics  # noqa: F401  registers exact_match
    import lm_eval.filters  # noqa: F401  registers regex / take_first
    from lm_eval.api.registry import get_filter, get_metric

    config = config or gsm8k_config()
    steps = next(f["filter"] for f in config["filter_list"] if f["name"] == "flexible-extract")
    regex = get_filter("regex")(**{k: v for k, v in steps[0].items() if k != "function"})
    metric = config["metric_list"][0]
    kwargs = {k: v for k, v in metric.items() if k not in ("metric", "aggregation", "higher_is_better")}
    exact_match = get_metric(metric["metric"])

    def judge(solution: str, response: str) -> tuple[bool, str]:
        read = regex.apply([[response]], [{}])[0][0]  # take_first
        return bool(exact_match(predictions=[read], references=[solution], **kwargs)["exact_match"]), read

    judge.fallback = regex.fallback  # what the regex returns when it finds no number
    return judge
