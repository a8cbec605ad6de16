"""Paired check of the llama.cpp backend against the transformers one: `hf` in float32 vs `llamacpp`
on the model's GGUF (the embedded model's own quantized GGUF by default), greedy first attempts on the
same GSM8K test problems.

Prints both accuracies with their 95% paired-bootstrap CIs, McNemar's exact p on the discordant
problems (the column order being hf then llamacpp), identical attempts and each backend's tokens/s,
with the CPU it ran on.

    python benchmarks/backend_agreement.py --problems 100 --out backend_agreement.json
"""

from __future__ import annotations

import argparse

from cpu_backends import cpu_line
from paired import first_attempts, report

from harness.grading import GradingPool
from harness.method import get_method
from harness.sampling import SamplingParams
from harness.rollout.backend import load_for_backend, make_generator
from harness.task import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--out", default=None, help="write the per-problem results and the summary here (JSON)")
    args = parser.parse_args()

    print(f"CPU: {cpu_line()}")
    task, method = get_task("gsm8k"), get_method("base")
    items = task.load("test")[: args.problems]
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    runs = {}
    with GradingPool() as pool:
        for backend, dtype in (("hf", "float32"), ("llamacpp", "auto")):
            loaded = load_for_backend(backend, args.model, dtype, "cpu")
            generator = make_generator(backend, loaded)
            weights = generator.model_record()["gguf_type"] if backend == "llamacpp" else loaded.dtype
            runs[f"{backend} ({weights})"] = first_attempts(backend, task, method, items, generator, params, pool,
                                                               f"({loaded.model_id})")
            del loaded, generator
    report(runs, f"GSM8K test, first {len(items)} problems, greedy, max_new_tokens {args.max_new_tokens}, "
                 f"model {args.model}", args.out)


if __name__ == "__main__":
    main()
