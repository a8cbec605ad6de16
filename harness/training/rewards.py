"""Where rewards come from. The default reads the task's grader verdicts already on each attempt;
a reward-model source (the A2C paper trained with a process reward model) plugs in here."""

from __future__ import annotations

from typing import Protocol

import torch

from harness.rollout.episode import Episode


class RewardSource(Protocol):
    def __call__(self, episodes: list[Episode]) -> torch.Tensor:
        """[K, E] rewards: one per attempt per episode."""
        ...


class GraderReward:
    """Binary reward: 1 if the task's grader marked the attempt correct."""

    def __call__(self, episodes: list[Episode]) -> torch.Tensor:
        return torch.tensor([e.correct for e in episodes], dtype=torch.float32).T.contiguous()

