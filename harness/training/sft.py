"""Supervised fine-tuning for the SFT baselines (Pair-SFT, STaR) on the shared training backend.

An SFT method alternates collect-then-fit: at the start of each iteration it samples from the current
policy and turns the samples into examples (token ids plus the spans trained on); the steps of that
iteration then minimise the cross-entropy of those spans only. Each iteration's examples are written
to `<run>/sft/iteration-NN.json` (with the decoded targets, for inspection), so a resumed run trains
on exactly the data it collected before.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.config import setting
from harness.rollout.episode import Episode, Step
from harness.sampling import rng_for
from harness.training.sequences import SequenceBatch, build_sequences

if TYPE_CHECKING:
    from harness.training.objective import TrainContext


# A collection's stats that are shares (averaged over processes); the rest are counts (summed).
RATE_STATS = frozenset({"r1", "r2"})


@dataclass
class SFTExample:
    problem_id: str
    input_ids: list[int]
    spans: list[tuple[int, int]]  # [start, stop) token ranges the loss is computed on

    @property
    def target_ids(self) -> list[int]:
        return [t for start, stop in self.spans for t in self.input_ids[start:stop]]


def example_from_stream(problem_id: str, prompt_ids: list[int], response: Step, eos_ids: list[int]) -> SFTExample:
    """`response`'s sampled tokens (and its EOS, when it stopped there) as the target after `prompt_ids`."""
    target = [*response.token_ids] + ([eos_ids[0]] if response.finished else [])
    return SFTExample(problem_id, [*prompt_ids, *target], [(len(prompt_ids), len(prompt_ids) + len(target))])


def examples_from_episodes(episodes: list[Episode], ctx: "TrainContext", attempts: list[int]) -> list[SFTExample]:
    """Each episode's whole token stream, trained on the chosen attempts (0-based) only."""
    examples = []
    for episode in episodes:
        seq = build_sequences([episode], ctx.tokenizer.pad_token_id, ctx.eos_ids)
        ids = seq.input_ids[0].tolist()
        spans = []
        for a in attempts:
            positions = seq.action_masks[a, 0].nonzero().flatten().tolist()
            if positions:
                spans.append((positions[0], positions[-1] + 1))
        examples.append(SFTExample(episode.item.id, ids, spans))
    return examples


def sft_batch(examples: list[SFTExample], pad_id: int) -> SequenceBatch:
    """Right-padded ids with one mask ([1, E, T]) over the target spans."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((1, len(examples), width))
    for row, example in enumerate(examples):
        input_ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        attention[row, : len(example.input_ids)] = 1
        for start, stop in example.spans:
            mask[0, row, start:stop] = 1.0
    return SequenceBatch(input_ids, attention, mask, torch.zeros((1, len(examples)), dtype=torch.long))


def cross_entropy(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per target token (the tokens of all examples weigh the same)."""
    return -(logp * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class SFTOptions:
    iterations: int = setting(1, ge=1)  # collect-then-fit rounds
    steps_per_iteration: int = setting(0, ge=0)  # 0: max_steps // iterations, the last takes the rest (fixed when the run starts)
    collect_problems: int = setting(0, ge=0)  # problems sampled per iteration; 0: problems_per_step x steps per iteration
    # > 0: exactly this many passes over the collected examples, the run's steps follow from the data
    # (no wrap-around; one iteration only). 0: steps_per_iteration steps, wrapping around the examples.
    epochs: int = setting(0, ge=0)

    def validate(self) -> None:
        from harness.errors import HarnessError

        if self.epochs and self.iterations > 1:
            raise HarnessError("epochs > 0 sizes one iteration's steps from its data: it needs iterations = 1")


@dataclass
class SFTSchedule:
    """Which iteration a step belongs to and which examples it trains on. Fixed when a run starts
    (written to `<run>/sft/schedule.json`), so resuming with a larger max_steps keeps the iterations."""

    iterations: int
    steps_per_iteration: int
    collect_problems: int
    seed: int
    folder: Path
    epochs: int = 0  # > 0: the run is `epochs` passes over the (single) iteration's examples
    loaded: dict[int, tuple[list[SFTExample], dict[str, float]]] = field(default_factory=dict)

    @classmethod
    def open(cls, run_dir: Path, opts: SFTOptions, max_steps: int, problems_per_step: int, seed: int) -> "SFTSchedule":
        folder = run_dir / "sft"
        path = folder / "schedule.json"
        if path.is_file():
            fixed = json.loads(path.read_text())
        else:
            # Whole iterations first, the last absorbs the remainder (3 iterations over 4 steps: 0, 1, 2, 2).
            per = opts.steps_per_iteration or max(1, max_steps // opts.iterations)
            fixed = {"iterations": opts.iterations, "steps_per_iteration": per,
                     "collect_problems": opts.collect_problems or problems_per_step * per, "epochs": opts.epochs}
        return cls(fixed["iterations"], fixed["steps_per_iteration"], fixed["collect_problems"], seed, folder,
                   fixed.get("epochs", 0))

    def save(self) -> None:
        from harness.store import atomic_write_text

        fixed = {"iterations": self.iterations, "steps_per_iteration": self.steps_per_iteration,
                 "collect_problems": self.collect_problems}
        if self.epochs:  # absent (0) in the schedules of runs that wrapped around, as before it existed
            fixed["epochs"] = self.epochs
        atomic_write_text(self.folder / "schedule.json", json.dumps(fixed, indent=2) + "\n")

    def iteration(self, step: int) -> int:
        return min(step // self.steps_per_iteration, self.iterations - 1)

    def epoch_steps(self, examples: int, size: int) -> int:
        """Steps of `epochs` passes over `examples` in batches of `size` (at least one: an empty
        collection still ends in one skipped, checkpointed step)."""
        return max(1, -(-self.epochs * examples // size))

    def path(self, iteration: int) -> Path:
        return self.folder / f"iteration-{iteration:02d}.json"

    def write(self, iteration: int, examples: list[SFTExample], stats: dict[str, float], cursor: dict[str, int],
              tokenizer: Any) -> None:
        from harness.store import atomic_write_text

        records = [{**asdict(e), "target_text": tokenizer.decode(e.target_ids)} for e in examples]
        atomic_write_text(self.path(iteration), json.dumps(
            {"iteration": iteration, "stats": stats, "cursor": cursor, "examples": records}) + "\n")

    def read(self, iteration: int) -> tuple[list[SFTExample], dict[str, float], dict[str, int]] | None:
        if not self.path(iteration).is_file():
            return None
        data = json.loads(self.path(iteration).read_text())
        examples = [SFTExample(r["problem_id"], r["input_ids"], [tuple(s) for s in r["spans"]]) for r in data["examples"]]
        self.loaded[iteration] = (examples, data["stats"])
        return examples, data["stats"], data["cursor"]

    def count(self, iteration: int) -> int | None:
        """How many examples the iteration's file holds (None: not collected yet); nothing is cached."""
        if not self.path(iteration).is_file():
            return None
        return len(json.loads(self.path(iteration).read_text())["examples"])

    def batch(self, step: int, examples: list[SFTExample], size: int) -> list[SFTExample]:
        """`size` examples for `step`: a seeded shuffle per iteration, walked in order and wrapped around;
        with `epochs`, a fresh seeded shuffle per pass, walked once (the last batch may be smaller)."""
        if not examples:
            return []
        iteration = self.iteration(step)
        if self.epochs:
            order = []
            for epoch in range(self.epochs):
                shuffled = list(range(len(examples)))
                rng_for(self.seed, "sft", iteration, "epoch", epoch).shuffle(shuffled)
                order.extend(shuffled)
            return [examples[i] for i in order[step * size : (step + 1) * size]]
        order = list(range(len(examples)))
        rng_for(self.seed, "sft", iteration).shuffle(order)
        offset = (step - iteration * self.steps_per_iteration) * size
        return [examples[order[(offset + i) % len(order)]] for i in range(size)]
