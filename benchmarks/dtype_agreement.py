"""Paired check before bf16 becomes a default: float32 vs bfloat16 greedy first attempts on the same
GSM8K test problems, through the decode engine.

Prints each dtype's accuracy with its 95% paired-bootstrap CI, McNemar's exact p on the discordant
problems (harness.metrics, the column order being float32 then bfloat16), the share of identical
attempts and each dtype's generated tokens/s. Only meaningful where bf16 is native (AVX512-BF16, AMX,
CUDA): elsewhere bf16 is emulated and very slow.

    python benchmarks/dtype_agreement.py --problems 100 --out dtype_agreement.json
"""

from __future__ import annotations

import argparse

from paired import first_attempts, report

from harness.grading import GradingPool
from harness.method import get_method
from harness.models import load_model
from harness.rollout import EngineGenerator
from harness.sampling import SamplingParams
from harness.task import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="write the per-problem results and the summary here (JSON)")
    args = parser.parse_args()

    task, method = get_task("gsm8k"), get_method("base")
    items = task.load("test")[: args.problems]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    runs = {}
    with GradingPool() as pool:
        for dtype in ("float32", "bfloat16"):
            loaded = load_model(args.model, dtype, args.device)
            generator = EngineGenerator(loaded.model, loaded.tokenizer)
            runs[dtype] = first_attempts(dtype, task, method, items, generator, params, pool,
                                         f"({loaded.device}, rows {generator.batch_size})")
            del loaded, generator
    report(runs, f"GSM8K test, first {len(items)} problems, greedy, max_new_tokens {args.max_new_tokens}, "
                 f"model {args.model}", args.out)


if __name__ == "__main__":
    main()
