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
import json
import time

from harness.grading import GradingPool
from harness.method import get_method
from harness.metrics import self_correction_metrics
from harness.models import load_model
from harness.rollout import EngineGenerator, SamplingParams, run_episodes
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
            start = time.perf_counter()
            episodes = run_episodes(task, method, items, generator, params, 1, pool)
            seconds = time.perf_counter() - start
            tokens = sum(e.steps[0].completion_tokens for e in episodes)
            runs[dtype] = {"correct": [e.correct[0] for e in episodes], "text": [e.steps[0].text for e in episodes],
                           "seconds": seconds, "tokens_per_s": tokens / seconds, "device": loaded.device}
            print(f"{dtype}: {len(items)} problems in {seconds:.0f} s, {tokens / seconds:.1f} generated tokens/s "
                  f"({loaded.device}, rows {generator.batch_size})", flush=True)
            del loaded, generator
    metrics = self_correction_metrics(list(zip(runs["float32"]["correct"], runs["bfloat16"]["correct"])))
    same = sum(a == b for a, b in zip(runs["float32"]["text"], runs["bfloat16"]["text"]))
    (f32, b16) = metrics.accuracy
    print(f"GSM8K test, first {len(items)} problems, greedy, max_new_tokens {args.max_new_tokens}, model {args.model}")
    print(f"accuracy float32 : {f32.value:.3f} [{f32.low:.3f}, {f32.high:.3f}]")
    print(f"accuracy bfloat16: {b16.value:.3f} [{b16.low:.3f}, {b16.high:.3f}]")
    print(f"bf16 - fp32: {metrics.delta.value:+.3f} [{metrics.delta.low:+.3f}, {metrics.delta.high:+.3f}]  "
          f"McNemar exact p = {metrics.mcnemar_p:.3f}  (right only in bf16: {metrics.incorrect_to_correct.value:.3f}, "
          f"only in fp32: {metrics.correct_to_incorrect.value:.3f})")
    print(f"identical attempts: {same}/{len(items)}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"problems": len(items), "metrics": metrics.to_dict(), "identical": same, "runs": runs}, fh, indent=1)


if __name__ == "__main__":
    main()
