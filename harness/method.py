"""What a method is: how the next attempt is asked for (and, for trained methods, their loss).

The core's default is SCoRe's intrinsic self-correction: attempt k+1 is generated on the conversation
[prompt, attempt k, correction instruction]. A method that needs intermediate generations (feedback,
a reflection) returns them as non-attempt requests; only attempts are graded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.prompts import SCORE_CORRECTION
from harness.registry import Registry
from harness.task import Item, Message, Task

if TYPE_CHECKING:
    from harness.rollout.episode import Episode
    from harness.training.objective import LossOutput, RLBatch, TrainContext


@dataclass(frozen=True)
class Request:
    messages: list[Message]
    kind: str = "attempt"  # "attempt" is graded; other kinds ("feedback", "reflection") are auxiliary steps


class Method:
    name: ClassVar[str] = ""
    kind: ClassVar[str] = "prompting"  # prompting | sft | rl
    paper: ClassVar[str] = ""
    trains: ClassVar[str] = "nothing"
    needs_entropy: ClassVar[bool] = False  # ask the trainer for per-token policy entropies
    masked_steps: ClassVar[str] = "attempts"  # the loss sees per-attempt masks, or per-step ("all": reflections too)
    options_class: ClassVar[type | None] = None  # the dataclass of its `method_options`, with defaults

    def __init__(self, system_prompt: str | None = None, correction_instruction: str | None = None, **options: Any):
        self.system_prompt = system_prompt
        self.correction_instruction = correction_instruction  # None: the task's, else SCoRe's
        self.options = options

    def first_request(self, task: Task, item: Item) -> Request:
        messages = [dict(m) for m in task.prompt(item)]
        if self.system_prompt is not None:
            if messages and messages[0]["role"] == "system":
                messages[0]["content"] = self.system_prompt
            else:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
        return Request(messages)

    def next_request(self, task: Task, item: Item, episode: "Episode") -> Request | None:
        """The request after the episode's last step, or None to stop (the last attempt then stands)."""
        last = episode.steps[-1]
        return Request(last.messages + [{"role": "assistant", "content": last.text},
                                        {"role": "user", "content": self.instruction_for(task)}])

    def instruction_for(self, task: Task) -> str:
        return self.correction_instruction or task.correction_instruction or SCORE_CORRECTION

    # ---- training hooks (trained methods override; prompting methods never reach them) ----------
    def parse_options(self) -> Any:
        """The method's typed options (`options_class`) from the `method_options` mapping, strings coerced."""
        from harness.config import build

        return build(self.options_class, self.options, f"{self.name} option")

    def rollout(self, ctx: "TrainContext", problems: list[Item]) -> list["Episode"]:
        """The episodes one RL step learns from: `samples_per_problem` 2-attempt episodes per problem."""
        return ctx.sample([item for item in problems for _ in range(ctx.config.samples_per_problem)], turns=2)

    def group_key(self, episode: "Episode") -> Any:
        """Episodes with the same key share a baseline: by default the samples of one problem."""
        return episode.item.id

    def rollout_logs(self) -> dict[str, float]:
        """Statistics of the last rollout worth logging beyond the per-attempt rewards."""
        return {}

    def setup(self, ctx: "TrainContext") -> None:
        """Build extra modules (a critic) once the policy exists."""

    def loss(self, batch: "RLBatch", ctx: "TrainContext") -> "LossOutput":
        raise NotImplementedError(f"method {self.name!r} does not train")

    def stage_ends(self) -> list[int]:
        """Step counts at which one of its training stages ends (the trainer checkpoints there)."""
        return []

    def after_step(self, ctx: "TrainContext") -> None:
        """Runs after each policy optimizer step (a critic's own optimizer steps here)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


METHODS: Registry[type[Method]] = Registry("method", "harness.methods")
register_method = METHODS.register


def get_method(name: str, **options: Any) -> Method:
    return METHODS.get(name)(**options)
