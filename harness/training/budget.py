"""The rollout-token budget: a run that stops on what it has generated rather than on a step count, so
methods that spend their samples differently (an RL step per batch, an SFT collection per iteration)
are compared at the same cost.

Counted: every generated token of the run's rollouts (each sampled attempt, reflections included; a
carried copy generates nothing), summed over processes. An RL run stops after the step that reaches the
budget (it overshoots by less than one step). An SFT run spends it on its collections: each iteration
gets an equal share of what is left and samples whole steps' worth of problems until the share is spent;
its fitting steps then follow as without a budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.rollout.episode import Episode


def generated_tokens(episodes: list[Episode]) -> int:
    """Tokens the episodes' rollout generated (a carried attempt is a copy: it generated nothing)."""
    return sum(s.completion_tokens for e in episodes for s in e.steps if not s.carried)


def problem_chunks(items: list[Any], per_chunk: int) -> list[list[Any]]:
    """`items` cut into runs of `per_chunk` problems; the samples of one problem (consecutive items
    with the same id) stay in one run."""
    chunks: list[list[Any]] = []
    problems, last = 0, object()
    for item in items:
        if item.id != last:
            if problems % per_chunk == 0:
                chunks.append([])
            problems += 1
            last = item.id
        chunks[-1].append(item)
    return chunks


@dataclass
class TokenBudget:
    limit: int  # 0: no budget
    generated: int = 0  # counted so far, over all processes (saved in each checkpoint)
    pending: int = 0  # counted by this process since the last `settle`

    def add(self, episodes: list[Episode]) -> int:
        count = generated_tokens(episodes)
        self.pending += count
        return count

    def settle(self, accel: Any) -> int:
        """Adds what every process counted since the last call to `generated`; returns that sum."""
        count = self.pending
        if accel.num_processes > 1:
            count = int(accel.reduce(torch.tensor([float(count)], device=accel.device), "sum").item())
        self.pending = 0
        self.generated += count
        return count

    def drop(self) -> None:
        """Forget an abandoned rollout's count (the step runs again)."""
        self.pending = 0

    def spent(self) -> bool:
        return self.limit > 0 and self.generated >= self.limit

    def share(self, iteration: int, iterations: int) -> int:
        """An SFT iteration's share: what is left, split evenly over the iterations still to collect."""
        return max(0, -(-(self.limit - self.generated) // max(1, iterations - iteration)))
