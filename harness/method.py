"""What a method is: how the next attempt is asked for. A trained method also names its objective
(harness/training/objective.py), which the trainer runs; this module knows nothing of training.

The core's default is SCoRe's intrinsic self-correction: attempt k+1 is generated on the conversation
[prompt, attempt k, correction instruction]. A method that needs intermediate generations (feedback,
a reflection) returns them as non-attempt requests; only attempts are graded.

Evaluation may wrap a method in a protocol (`with_feedback`, `harness eval --feedback oracle`): the
grader's verdict on each attempt then stops the episode or is told to the model. Methods never see it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from harness.errors import HarnessError
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
    # Which checkpoint of a training run `eval`/`compare` use unless --checkpoint-select says otherwise:
    # what the method's paper does (best: highest recorded training reward; last: the final one).
    checkpoint_select: ClassVar[str] = "last"

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


# Evaluation protocols (`--feedback`). "none": intrinsic self-correction, the model always gets its next
# turn with no verifier signal (SCoRe's protocol, the default). "oracle": the task's grader is the
# verifier, as in RRR's evaluation (Bensal et al., 2025): a correct attempt ends the episode, and the
# first request after a wrong one says it was wrong.
FEEDBACKS = ("none", "oracle")
WRONG_ANSWER = "Your previous answer is incorrect."


def feedback_label(label: str, feedback: str) -> str:
    """A table row's label under a protocol: intrinsic rows keep their plain labels, `rrr (oracle)`."""
    return label if feedback == "none" else f"{label} ({feedback})"


class OracleFeedback:
    """A method under the oracle protocol: the grader's verdict on each attempt decides whether the
    episode goes on, and a wrong verdict is said at the start of the next request's last user message
    (for methods with an auxiliary step, the reflection or feedback request). The wrapped method never
    knows; everything else (first request, name, options) is the method's own."""

    def __init__(self, method: Method):
        self.method = method

    def __getattr__(self, name: str) -> Any:
        if name == "method":  # not set yet (copy, unpickling): no endless lookup
            raise AttributeError(name)
        return getattr(self.method, name)

    def first_request(self, task: Task, item: Item) -> Request:
        return self.method.first_request(task, item)

    def next_request(self, task: Task, item: Item, episode: "Episode") -> Request | None:
        last = episode.steps[-1]
        graded = last.kind == "attempt" and last.grade is not None
        if graded and last.grade.correct:
            return None  # verified: this attempt stands for the remaining turns
        request = self.method.next_request(task, item, episode)
        if request is None or not graded:
            return request
        messages = [dict(m) for m in request.messages]
        turn = next(i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user")
        messages[turn]["content"] = f"{WRONG_ANSWER} {messages[turn]['content']}"
        return replace(request, messages=messages)


def with_feedback(method: Method, feedback: str) -> Method:
    """`method` under the evaluation protocol `feedback` (one of FEEDBACKS)."""
    if feedback == "none":
        return method
    if feedback == "oracle":
        return OracleFeedback(method)  # type: ignore[return-value]  (a Method in every way the driver uses)
    raise HarnessError(f"unknown feedback {feedback!r}; choose from: {', '.join(FEEDBACKS)}")


METHODS: Registry[type[Method]] = Registry("method", "harness.methods")
register_method = METHODS.register


def get_method(name: str, **options: Any) -> Method:
    return METHODS.get(name)(**options)
