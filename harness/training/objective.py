"""The training contract: what a trained method gives the trainer, and what the trainer gives it.

A method (harness/method.py) says how attempts are asked for; a trained method also names an objective
class here. An `RLObjective` rolls out episodes and turns a micro-batch of them into a loss; an
`SFTObjective` turns an iteration's samples into examples to fit. The loop dispatches on these types.
Modules an objective trains besides the policy (A2C's critic) are declared by `setup` as
`TrainableModule`s: the trainer gives them their parameter group, averages their gradients across
processes, clips, steps, checkpoints and restores them, so an objective never does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch

from harness.rollout.episode import Episode
from harness.training.sequences import SequenceBatch

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase

    from harness.method import Method
    from harness.models import LoadedModel
    from harness.rollout.generator import Generator
    from harness.task import Item, Task
    from harness.training.config import TrainConfig
    from harness.training.sft import SFTExample


@dataclass
class RLBatch:
    step: int  # optimizer step being computed (0-based): methods switch stages on it
    episodes: list[Episode]
    sequences: SequenceBatch
    rewards: torch.Tensor  # [K, E] binary rewards from the reward source, per attempt
    groups: torch.Tensor  # [E] problem index: samples of one problem share it
    logp: torch.Tensor  # [K, E, T] policy log-probs at each attempt's tokens (0 elsewhere)
    ref_logp: torch.Tensor  # [K, E, T] reference (adapters off), no gradient
    entropy: torch.Tensor | None  # [K, E, T] policy entropies, when the objective asks for them
    norm: float  # constant divisor of sequence sums (the token budget)
    # [K, E, T] the masks weighed by truncated importance weights (engine rollouts); None: the masks
    importance: torch.Tensor | None = None

    @property
    def masks(self) -> torch.Tensor:
        return self.sequences.action_masks

    @property
    def pg_masks(self) -> torch.Tensor:
        """The masks of the policy-gradient terms: with each token's importance weight where the rollout
        came from an engine's copy of the weights (KL and entropy terms keep the plain masks, as in TRL)."""
        return self.masks if self.importance is None else self.importance


@dataclass
class LossOutput:
    loss: torch.Tensor  # everything backpropagated: the policy's terms plus those of any declared module
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainableModule:
    """A module the trainer trains beside the policy, in its own parameter group."""

    name: str  # its key in the checkpoint's "method" part
    module: torch.nn.Module  # its parameters: `module.trainable_parameters()` if defined, else those requiring grad
    lr: float
    max_grad_norm: float = 0.0  # 0: no clipping (clipped on its own, not with the policy)
    weight_decay: float = 0.01

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        if hasattr(self.module, "trainable_parameters"):
            return dict(self.module.trainable_parameters())
        return {n: p for n, p in self.module.named_parameters() if p.requires_grad}


@dataclass
class TrainContext:
    """Handles an objective may need: the accelerator, the policy, the config, and sampling from the policy."""

    accelerator: "Accelerator"
    policy: torch.nn.Module  # the peft-wrapped causal LM (unwrapped from DDP)
    tokenizer: "PreTrainedTokenizerBase"
    config: "TrainConfig"
    device: torch.device
    task: "Task"  # the task trained on
    generator: "Generator"  # the rollout engine over the policy (encode / continuation build SFT data)
    eos_ids: list[int] = field(default_factory=list)
    # sample(items, turns, episodes=None) -> list[Episode]: the method's rollout with the current policy,
    # seeded by (seed, step, call), graded; `episodes` continues existing ones instead of starting fresh.
    sample: Callable[..., list[Episode]] | None = None
    # load_model(spec) -> LoadedModel: another model (a separate critic) in the dtype the policy was loaded in.
    load_model: Callable[[str], "LoadedModel"] | None = None


def parse_options(options_class: type | None, options: dict[str, Any], method: str) -> Any:
    """The typed options of `method` from its `method_options`: strings coerced, unknown keys and values
    out of range refused with one line (HarnessError)."""
    from harness.config import build
    from harness.errors import HarnessError

    if options_class is None:
        if options:
            raise HarnessError(f"method {method!r} takes no method_options")
        return None
    return build(options_class, options, f"{method} option")


class Objective:
    """What a trained method optimises. Built by the trainer with the method (for its requests) and
    its options; `setup` runs once the policy exists."""

    kind: ClassVar[str] = ""  # rl | sft: what `harness methods` shows
    options_class: ClassVar[type | None] = None  # the dataclass of its `method_options`, with defaults

    def __init__(self, method: "Method"):
        self.method = method
        self.opts = parse_options(self.options_class, method.options, method.name)

    def setup(self, ctx: TrainContext) -> list[TrainableModule]:
        """Build what it needs once the policy exists; returns the modules it trains besides the policy."""
        return []

    def stage_ends(self) -> list[int]:
        """Step counts at which one of its training stages ends (the trainer checkpoints there)."""
        return []

    def state(self) -> dict[str, Any]:
        """What it fixed when the run started and must keep on resume (saved in every checkpoint)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore `state()` from a checkpoint."""


class RLObjective(Objective):
    kind = "rl"
    needs_entropy: ClassVar[bool] = False  # ask the trainer for per-token policy entropies
    masked_steps: ClassVar[str] = "attempts"  # the loss sees per-attempt masks, or per-step ("all": reflections too)

    def rollout(self, ctx: TrainContext, problems: list["Item"]) -> list[Episode]:
        """The episodes one RL step learns from: `samples_per_problem` 2-attempt episodes per problem."""
        return ctx.sample([item for item in problems for _ in range(ctx.config.samples_per_problem)], turns=2)

    def group_key(self, episode: Episode) -> Any:
        """Episodes with the same key share a baseline: by default the samples of one problem."""
        return episode.item.id

    def rollout_logs(self) -> dict[str, float]:
        """Statistics of the last rollout worth logging beyond the per-attempt rewards."""
        return {}

    def loss(self, batch: RLBatch, ctx: TrainContext) -> LossOutput:
        raise NotImplementedError


class SFTObjective(Objective):
    """Collect-then-fit: `collect` builds an iteration's examples; the trainer fits their target spans."""

    kind = "sft"
    # True: each iteration's fit restarts from the base (a LoRA re-initialised from the run's seed, a fresh
    # optimizer state) on that iteration's data, which the previous iteration's policy sampled (STaR).
    restart_each_iteration: ClassVar[bool] = False

    def collect(self, ctx: TrainContext, problems: list["Item"]) -> tuple[list["SFTExample"], dict[str, float]]:
        """This iteration's examples from the current policy's samples, and statistics to log."""
        raise NotImplementedError


class TwoStageObjective(RLObjective):
    """An RL objective on a two-stage schedule (SCoRe, A2C): its options hold `stage1_steps` (0: a third
    of max_steps). The resolved number is fixed when the run starts and kept in every checkpoint, so a
    run resumed with a larger max_steps keeps its stage I."""

    def setup(self, ctx: TrainContext) -> list[TrainableModule]:
        self.stages = TwoStages.of(self.opts.stage1_steps, ctx.config.max_steps)
        return []

    def stage_ends(self) -> list[int]:
        return self.stages.ends()

    def state(self) -> dict[str, Any]:
        return {"stage1_steps": self.stages.stage1_steps}

    def load_state(self, state: dict[str, Any]) -> None:
        if "stage1_steps" in state:  # checkpoints written before it was stored recompute it
            self.stages = TwoStages(int(state["stage1_steps"]))

    def stage_of(self, step: int) -> int:
        return self.stages.stage_of(step)


@dataclass(frozen=True)
class TwoStages:
    """A two-stage schedule (SCoRe, A2C): stage I for the first `stage1_steps` optimizer steps, then stage II."""

    stage1_steps: int

    @classmethod
    def of(cls, stage1_steps: int, max_steps: int) -> "TwoStages":
        """`stage1_steps` 0 means a third of max_steps (at least one step)."""
        return cls(stage1_steps or max(1, max_steps // 3))

    def stage_of(self, step: int) -> int:
        return 1 if step < self.stage1_steps else 2

    def ends(self) -> list[int]:
        return [self.stage1_steps]
