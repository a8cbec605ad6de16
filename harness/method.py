"""What a method is: how the next attempt is asked for. A trained method also names its objective
(harness/training/objective.py), which the trainer runs; this module knows nothing of training.

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
    from harness.rollout.episode import Episode, Step


@dataclass(frozen=True)
class Request:
    messages: list[Message]
    kind: str = "attempt"  # "attempt" is graded; other kinds ("feedback", "reflection") are auxiliary steps


class Method:
    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    trains: ClassVar[str] = "nothing"
    # A trained method's objective class (an RLObjective or SFTObjective subclass); None: prompting only.
    objective: ClassVar[type | None] = None
    kind: ClassVar[str] = "prompting"  # derived from `objective`: prompting | rl | sft

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = cls.objective.kind if cls.objective is not None else "prompting"

    def __init__(self, system_prompt: str | None = None, correction_instruction: str | None = None, **options: Any):
        self.system_prompt = system_prompt
        self.correction_instruction = correction_instruction  # None: the task's, else SCoRe's
        self.options = options  # the objective's method_options (a trained method's)

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
        return self.follow_up(episode.steps[-1], self.instruction_for(task))

    @staticmethod
    def follow_up(step: "Step", message: str, kind: str = "attempt") -> Request:
        """The conversation of `step`, its answer, then `message` from the user: the usual next turn."""
        return Request(step.conversation() + [{"role": "user", "content": message}], kind=kind)

    def instruction_for(self, task: Task) -> str:
        return self.correction_instruction or task.correction_instruction or SCORE_CORRECTION


METHODS: Registry[type[Method]] = Registry("method", "harness.methods")
register_method = METHODS.register


def get_method(name: str, **options: Any) -> Method:
    return METHODS.get(name)(**options)
