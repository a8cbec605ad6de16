"""What a trained method's loss sees each micro-batch, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    """Handles a method may need in `setup`: the accelerator, the policy and how to load models."""

    accelerator: Any
    policy: Any  # the peft-wrapped causal LM (unwrapped from DDP)
    tokenizer: Any
    config: Any  # TrainConfig
    device: Any
