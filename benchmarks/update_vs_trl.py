"""Benchmark: one RL update of ours against TRL's GRPOTrainer on the same data.

Same model (default: the embedded Qwen2.5-Coder-0.5B-Instruct, 24 layers, its real 151k-token
vocabulary) with the same LoRA, the same batch of fixed sequences (prompt P tokens + completion C
tokens, binary rewards), float32 on CPU (bf16 autocast for both with --bf16). One update
= reference log-probs (adapters off, no grad) + policy log-probs + loss + backward + AdamW step.
Ours: SCoRe's stage-II loss with the completion split into y1 | y2 (C/2 tokens each).
TRL: GRPOTrainer's own reference pass and compute_loss (loss_type dr_grpo, beta 0.04).

Times are medians over repeats, both measured in this process, alternating. Peak memory is the
peak RSS growth of a fresh process doing only warm-up + updates of one implementation.

    pip install 'trl'   # the `bench` extra
    python benchmarks/update_vs_trl.py --model embedded --batch 8 --prompt 64 --completion 64
    python benchmarks/update_vs_trl.py --model tiny-random-m --batch 16 --prompt 128 --completion 128
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def build(args):
    from harness.models import load_model
    from harness.training.config import LoraSettings
    from harness.lora import attach_lora

    loaded = load_model(args.model, "float32")
    policy = attach_lora(loaded.model, LoraSettings(rank=16, alpha=32), seed=0)
    g = torch.Generator().manual_seed(0)
    vocab = len(loaded.tokenizer)
    ids = torch.randint(3, vocab - 1, (args.batch, args.prompt + args.completion), generator=g)
    rewards = torch.randint(0, 2, (2, args.batch), generator=g).float()
    return loaded, policy, ids, rewards


class Phases:
    """Seconds per phase of the latest update (reference pass, policy forward + loss, backward, step)."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {}
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds.setdefault(name, []).append(now - self._last)
        self._last = now


def ours_update(policy, optimizer, ids, rewards, args, phases: Phases):
    from harness.training.objective import RLBatch
    from harness.training.policy import reference_mode
    from harness.training.sequences import SequenceBatch, TokenLogprobs
    from methods.score import ScoreOptions, score_loss

    e, t = ids.shape
    masks = torch.zeros(2, e, t)
    half = args.prompt + args.completion // 2
    masks[0, :, args.prompt:half] = 1
    masks[1, :, half:] = 1
    seq = SequenceBatch(ids, torch.ones_like(ids), masks, torch.tensor([[args.prompt - 1] * e, [half - 1] * e]))
    module = TokenLogprobs(policy)
    union = masks.sum(0)
    phases.start()
    with torch.no_grad(), reference_mode(policy):
        ref, _ = module(ids, seq.attention_mask, union)
    phases.mark("reference")
    logp, _ = module(ids, seq.attention_mask, union)
    groups = torch.arange(e) // 4  # 4 samples per problem, like GRPO's num_generations
    batch = RLBatch(1, [], seq, rewards, groups, torch.stack([logp * masks[0], logp * masks[1]]),
                    torch.stack([ref * masks[0], ref * masks[1]]), None, float(args.completion))
    out = score_loss(batch, ScoreOptions(), stage=2)
    phases.mark("policy forward + loss")
    out.loss.backward()
    phases.mark("backward")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    phases.mark("optimizer")


def trl_setup(loaded, policy, args, tmp):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    config = GRPOConfig(output_dir=tmp, per_device_train_batch_size=args.batch, num_generations=4,
                        max_completion_length=args.completion, beta=0.04, loss_type="dr_grpo", report_to=[],
                        use_cpu=True, bf16=args.bf16, logging_steps=1000, save_strategy="no")
    data = Dataset.from_dict({"prompt": ["x"] * args.batch})
    trainer = GRPOTrainer(model=policy, reward_funcs=[lambda completions, **_: [0.0] * len(completions)], args=config,
                          train_dataset=data, processing_class=loaded.tokenizer)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(), which this benchmark bypasses
    return trainer


def trl_update(trainer, policy, optimizer, ids, rewards, args, phases: Phases):
    prompt, completion = ids[:, : args.prompt], ids[:, args.prompt :]
    ones_p, ones_c = torch.ones_like(prompt), torch.ones_like(completion)
    phases.start()
    with torch.no_grad(), policy.disable_adapter():
        ref, _, _ = trainer._get_per_token_logps_and_entropies(policy, ids, torch.ones_like(ids), args.completion)
    phases.mark("reference")
    r = rewards.sum(0)
    advantages = r - r.view(-1, 4).mean(1).repeat_interleave(4)
    inputs = {"prompt_ids": prompt, "prompt_mask": ones_p, "completion_ids": completion, "completion_mask": ones_c,
              "advantages": advantages, "ref_per_token_logps": ref, "old_per_token_logps": None,
              "num_items_in_batch": ones_c.sum()}
    loss = trainer.compute_loss(policy, inputs)
    phases.mark("policy forward + loss")
    loss.backward()
    phases.mark("backward")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    phases.mark("optimizer")


def run(impl: str, args) -> dict:
    import tempfile

    loaded, policy, ids, rewards = build(args)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-5)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trl_setup(loaded, policy, args, tmp) if impl in ("trl", "both") else None
        autocast = lambda: torch.autocast("cpu", torch.bfloat16, enabled=args.bf16)  # noqa: E731

        phases = {"ours": Phases(), "trl": Phases()}

        def ours():
            with autocast():
                ours_update(policy, optimizer, ids, rewards, args, phases["ours"])

        def trl():
            with autocast():
                trl_update(trainer, policy, optimizer, ids, rewards, args, phases["trl"])

        steps = {"ours": ours, "trl": trl}
        chosen = ["ours", "trl"] if impl == "both" else [impl]
        for name in chosen:
            steps[name]()  # warm-up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        times = {name: [] for name in chosen}
        for _ in range(args.repeats):
            for name in chosen:
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"times": {k: statistics.median(v) for k, v in times.items()}, "peak_growth_mib": (peak - before) / 1024,
            "phases": {k: {p: statistics.median(v[1:] or v) for p, v in phases[k].seconds.items()} for k in chosen},
            "peak_mib": peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--completion", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for both (where the CPU has it)")
    parser.add_argument("--impl", default=None, help=argparse.SUPPRESS)  # internal: one implementation only
    args = parser.parse_args()
    if args.impl:
        print(json.dumps(run(args.impl, args)))
        return
    both = run("both", args)
    mem = {}
    for impl in ("ours", "trl"):
        out = subprocess.run([sys.executable, __file__, "--impl", impl, *sys.argv[1:]], capture_output=True, text=True)
        mem[impl] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    ours, trl = both["times"]["ours"], both["times"]["trl"]
    print(f"one update, {args.model} + LoRA r16, batch {args.batch}, prompt {args.prompt} + completion "
          f"{args.completion} tokens, {'bf16 autocast' if args.bf16 else 'float32'}, {torch.get_num_threads()} threads")
    print(f"ours: {ours * 1000:8.1f} ms   peak RSS {mem['ours']:7.1f} MiB")
    print(f"TRL : {trl * 1000:8.1f} ms   peak RSS {mem['trl']:7.1f} MiB")
    print(f"time ratio ours/TRL: {ours / trl:.2f}x   peak-memory ratio ours/TRL: {mem['ours'] / mem['trl']:.2f}x")
    for phase in both["phases"]["ours"]:
        print(f"  {phase:22s} ours {both['phases']['ours'][phase] * 1000:8.1f} ms   "
              f"TRL {both['phases']['trl'].get(phase, float('nan')) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
