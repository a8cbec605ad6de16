"""What a trained method's loss sees each micro-batch, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from harness.rollout.episode import Episode
from harness.training.sequences import SequenceBatch


@dataclass
class RLBatch:
    step: int  # optimizer step being computed (0-based): methods switch stages on it
    episodes: list[Episode]
    sequences: SequenceBatch
    rewards: torch.Tensor  # [K, E] binary rewards from the reward source, per attempt
    groups: torch.Tensor  # [E] problem index: samples of one problem share it
    logp: torch.Tensor  # [K, E, T] policy log-probs at each attempt's tokens (0 elsewhere)
    ref_logp: torch.Tensor  # [K, E, T] reference (adapters off), no gradient
    entropy: torch.Tensor | None  # [K, E, T] policy entropies, when the method asks for them
    norm: float  # constant divisor of sequence sums (the token budget)
    scale: float = 1.0  # 1 / number of micro-batches: for losses a method backpropagates itself

    @property
    def masks(self) -> torch.Tensor:
        return self.sequences.action_masks


@dataclass
class LossOutput:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainContext:
    """Handles a method may need: the accelerator, the policy, the config, and sampling from the policy."""

    accelerator: Any
    policy: Any  # the peft-wrapped causal LM (unwrapped from DDP)
    tokenizer: Any
    config: Any  # TrainConfig
    device: Any
    task: Any = None  # the Task trained on
    generator: Any = None  # HFGenerator over the policy (encode / continuation for building SFT data)
    eos_ids: list[int] = field(default_factory=list)
    # sample(items, turns, episodes=None) -> list[Episode]: the method's rollout with the current policy,
    # seeded by (seed, step, call), graded; `episodes` continues existing ones instead of starting fresh.
    sample: Callable[..., list[Episode]] | None = None
