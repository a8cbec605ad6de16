"""The GPU check (issue 25): `pytest -m gpu` plus a timing line, summarised in one JSON file.

    python scripts/gpu_check.py [--out results/gpu-check/summary.json] [--model random-0.5b-shape]

Runs tests/test_gpu.py (engine vs plain `generate` in bf16, memory-based rows, a `score` and an
`a2c2stage` step with gradient checkpointing, exact resume), then times the engine and plain batched
`generate` on 64 prompts at batch 64 (greedy, 256 new tokens, bf16) with a random model of
Qwen2.5-0.5B's shape (or --model, e.g. a folder the machine has). Without CUDA the tests report
skipped and the timing is left out; the exit code is pytest's (0 when everything passed or skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Outcomes:
    """A pytest plugin that keeps each test's outcome, duration and recorded properties."""

    def __init__(self):
        self.tests: dict[str, dict] = {}

    def pytest_collectreport(self, report):
        if report.failed:  # a module that cannot even be imported is a failure, not an empty run
            self.tests[report.nodeid] = {"outcome": "failed", "seconds": 0.0, "error": report.longreprtext[-2000:]}

    def pytest_runtest_logreport(self, report):
        entry = self.tests.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0})
        entry["seconds"] = round(entry["seconds"] + report.duration, 2)
        if report.skipped:
            entry["outcome"] = "skipped"
            entry["reason"] = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        elif report.failed:
            entry["outcome"] = "failed"
            entry["error"] = report.longreprtext[-2000:]
        for key, value in report.user_properties:
            entry.setdefault("measured", {})[key] = value


def timing(model_spec: str, rows: int, new_tokens: int, device: str) -> dict:
    """Generated tokens/s of plain batched `generate` and of the engine, one after the other, bf16."""
    import torch

    from harness.models import load_model
    from harness.rollout import EngineGenerator, HFGenerator
    from harness.sampling import SamplingParams
    from harness.task import get_task

    loaded = load_model(model_spec, dtype="bfloat16", device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    task = get_task("countdown")
    chats = [task.prompt(item) for item in task.load("test")[:rows]]
    params = SamplingParams(max_new_tokens=new_tokens)
    result = {"model": loaded.model_id, "rows": rows, "max_new_tokens": new_tokens, "dtype": "bfloat16"}
    for name, generator in (("plain_generate", HFGenerator(loaded.model, loaded.tokenizer, rows)),
                            ("engine", EngineGenerator(loaded.model, loaded.tokenizer, rows))):
        generator.generate(chats[:4], SamplingParams(max_new_tokens=8))  # warm-up: kernels, allocator
        sync()
        start = time.perf_counter()
        out = generator.generate(chats, params)
        sync()
        seconds = time.perf_counter() - start
        tokens = sum(c.completion_tokens for (c,) in out)
        result[name] = {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}
    result["engine_over_plain"] = round(result["engine"]["tokens_per_s"] / result["plain_generate"]["tokens_per_s"], 2)
    return result


def versions() -> dict:
    from harness.manifest import package_versions

    return {"python": platform.python_version(), **package_versions()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "results" / "gpu-check" / "summary.json"))
    parser.add_argument("--model", default=os.environ.get("HARNESS_GPU_CHECK_MODEL", "random-0.5b-shape"),
                        help="model for the timing line: a tiny random one, or a folder the machine has")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()

    import pytest
    import torch

    started = time.perf_counter()
    outcomes = Outcomes()
    code = int(pytest.main(["-q", "-m", "gpu", "-p", "no:cacheprovider", str(REPO / "tests" / "test_gpu.py")],
                           plugins=[outcomes]))
    # HARNESS_GPU_CHECK_DEVICE=cpu: the same bodies on the CPU, to try them before a GPU is at hand
    device = os.environ.get("HARNESS_GPU_CHECK_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
    summary = {
        "device": (torch.cuda.get_device_name(0) if device.startswith("cuda") else device) if device else "no CUDA device",
        "versions": versions(),
        "pytest_exit_code": code,
        "tests": outcomes.tests,
        "timing": timing(args.model, args.rows, args.max_new_tokens, device) if device else "skipped: no CUDA device",
    }
    summary["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out)
    counts = {}
    for entry in outcomes.tests.values():
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    print(f"gpu-check on {summary['device']}: {counts} in {summary['seconds']} s; summary: {out}")
    if device:
        t = summary["timing"]
        print(f"timing ({t['model']}, bf16, {t['rows']} rows, {t['max_new_tokens']} new tokens): plain generate "
              f"{t['plain_generate']['tokens_per_s']} tokens/s, engine {t['engine']['tokens_per_s']} tokens/s "
              f"({t['engine_over_plain']}x)")
    return code


if __name__ == "__main__":
    sys.exit(main())
