"""Benchmark: the rollout engine against a naive loop and against plain batched `model.generate`.

Same model, dtype, prompts and greedy settings; all three produce 2-attempt `base` episodes:
- naive loop: one `generate` per problem per turn (batch 1, turn 2 re-encodes the conversation);
- plain batched: the driver's rounds through `HFGenerator` (left-padded `generate`, length-sorted
  batches that decode until their longest row ends, turn 2 re-prefills the whole conversation);
- engine: `EngineGenerator` (continuous batching, turn 2 prefills only the correction instruction).
Prints identical attempts (engine vs each baseline), generated tokens/s and the speed-up ratios, all
measured in this process one after the other.

    python benchmarks/rollout_vs_naive.py --model embedded --problems 8 --batch-size 8
"""

from __future__ import annotations

import argparse
import time

import torch

from harness.grading import GradingPool
from harness.method import get_method
from harness.models import load_model
from harness.rollout import EngineGenerator, HFGenerator, run_episodes
from harness.sampling import SamplingParams
from harness.task import get_task


def naive_episodes(model, tokenizer, task, method, items, params: SamplingParams) -> list[list[tuple[str, int]]]:
    """Turn 1 and turn 2 for one problem at a time, batch 1, no padding: the loop a script would write."""
    eos = [model.generation_config.eos_token_id, tokenizer.eos_token_id]
    episodes = []
    for item in items:
        messages = method.first_request(task, item).messages
        attempts = []
        for _ in range(2):
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            with torch.inference_mode():
                out = model.generate(**ids, max_new_tokens=params.max_new_tokens, do_sample=False, eos_token_id=eos,
                                     pad_token_id=tokenizer.pad_token_id)
            new = out[0, ids["input_ids"].shape[1]:].tolist()
            kept = new[: next((j for j, t in enumerate(new) if t in eos), len(new))]
            text = tokenizer.decode(kept, skip_special_tokens=True)
            attempts.append((text, len(new)))
            messages = messages + [{"role": "assistant", "content": text},
                                   {"role": "user", "content": method.instruction_for(task)}]
        episodes.append(attempts)
    return episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8, help="rows for both batched paths")
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--skip-naive", action="store_true", help="only plain batched generate vs the engine")
    args = parser.parse_args()

    loaded = load_model(args.model, args.dtype)
    task, method = get_task(args.task), get_method("base")
    items = task.load("test")[: args.problems]
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    print(f"model {loaded.model_id} ({loaded.dtype}, {loaded.device}), {len(items)} problems x 2 turns, "
          f"greedy, max_new_tokens {args.max_new_tokens}, torch threads {torch.get_num_threads()}")

    rows = []
    texts = {}
    if not args.skip_naive:
        start = time.perf_counter()
        naive = naive_episodes(loaded.model, loaded.tokenizer, task, method, items, params)
        rows.append(("naive loop (batch 1)", time.perf_counter() - start, sum(n for ep in naive for _, n in ep)))
        texts["naive loop"] = [text for ep in naive for text, _ in ep]
    with GradingPool() as pool:
        pool.grade(task, items[:1], [""])  # start the graders outside the timed regions
        for name, generator in ((f"plain batched generate (batch {args.batch_size})",
                                 HFGenerator(loaded.model, loaded.tokenizer, args.batch_size)),
                                (f"engine (rows {args.batch_size})",
                                 EngineGenerator(loaded.model, loaded.tokenizer, args.batch_size))):
            start = time.perf_counter()
            episodes = run_episodes(task, method, items, generator, params, 2, pool)
            rows.append((name, time.perf_counter() - start, sum(s.completion_tokens for e in episodes for s in e.steps)))
            texts[name.split(" (")[0]] = [s.text for e in episodes for s in e.attempts]
            if isinstance(generator, EngineGenerator):
                stats = generator.last_stats
                print(f"engine: {stats.decode_steps} decode steps, {sum(stats.rows_per_step) / max(1, stats.decode_steps):.1f} "
                      f"rows/step on average, prefilled {stats.prefill_tokens} prompt tokens, reused {stats.reused_tokens}")
    total = 2 * len(items)
    for other in [k for k in texts if k != "engine"]:
        same = sum(a == b for a, b in zip(texts["engine"], texts[other]))
        print(f"identical attempts, engine vs {other}: {same}/{total}")
    for name, seconds, tokens in rows:
        print(f"{name:42s} {seconds:8.1f} s  {len(items) / seconds:6.3f} episodes/s  {tokens / seconds:6.1f} generated tokens/s")
    engine_s = rows[-1][1]
    for name, seconds, _ in rows[:-1]:
        print(f"speed-up vs {name}: {seconds / engine_s:.2f}x (time ratio)")


if __name__ == "__main__":
    main()
