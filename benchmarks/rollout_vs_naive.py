"""Benchmark: the batched rollout core against a naive loop (one `generate` per problem per turn).

Same model, prompts and greedy settings; both produce 2-attempt episodes. Prints whether the texts
are identical, episodes/s and generated tokens/s for each, and the speed-up ratio.

    python benchmarks/rollout_vs_naive.py --model embedded --problems 8 --batch-size 8
"""

from __future__ import annotations

import argparse
import time

import torch

from harness.grading import GradingPool
from harness.method import get_method
from harness.models import load_model
from harness.rollout import HFGenerator, SamplingParams, run_episodes
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
                                   {"role": "user", "content": method.correction_instruction}]
        episodes.append(attempts)
    return episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=320)
    args = parser.parse_args()

    loaded = load_model(args.model)
    task, method = get_task(args.task), get_method("base")
    items = task.load("test")[: args.problems]
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    print(f"model {loaded.model_id} ({loaded.dtype}, {loaded.device}), {len(items)} problems x 2 turns, "
          f"greedy, max_new_tokens {args.max_new_tokens}, torch threads {torch.get_num_threads()}")

    start = time.perf_counter()
    naive = naive_episodes(loaded.model, loaded.tokenizer, task, method, items, params)
    naive_s = time.perf_counter() - start
    naive_tokens = sum(n for ep in naive for _, n in ep)

    generator = HFGenerator(loaded.model, loaded.tokenizer, args.batch_size)
    with GradingPool() as pool:
        pool.grade(task, items[:1], [""])  # start the graders outside the timed region
        start = time.perf_counter()
        core = run_episodes(task, method, items, generator, params, 2, pool)
        core_s = time.perf_counter() - start
    core_tokens = sum(s.completion_tokens for ep in core for s in ep.steps)

    same = sum(a[0] == s.text for ep_naive, ep in zip(naive, core) for a, s in zip(ep_naive, ep.attempts))
    total = 2 * len(items)
    print(f"identical attempts: {same}/{total}")
    for name, seconds, tokens in (("naive loop", naive_s, naive_tokens), (f"rollout core (batch {args.batch_size})", core_s, core_tokens)):
        print(f"{name:28s} {seconds:8.1f} s  {len(items) / seconds:6.3f} episodes/s  {tokens / seconds:6.1f} generated tokens/s")
    print(f"speed-up (naive time / core time): {naive_s / core_s:.2f}x")


if __name__ == "__main__":
    main()
