"""What a task is: items, the turn-1 prompt, the gold answer and a grader, registered by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from harness.errors import HarnessError
from harness.registry import Registry

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}

# The graders' version, stored with every grade the grading pool returns and in run manifests. Bump it
# whenever any grader's verdicts change; `harness regrade` brings stored samples up to date.
GRADER_VERSION = 2


@dataclass(frozen=True)
class Grade:
    correct: bool
    extracted: str | None
    reason: str
    grader_version: int | None = None  # set by the grading pool; None in records stored before version 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Item:
    """One problem. `answer` is the gold final answer; `meta` keeps what breakdowns and graders need."""

    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    splits: ClassVar[dict[str, int]] = {}  # split -> expected number of items
    grade_fields: ClassVar[tuple[str, ...]] = ("answer",)  # fields a `harness grade` line needs
    # The task's own correction instruction (code tasks ask for a program, not a final answer); a
    # method uses it when the user gave none, else SCoRe's.
    correction_instruction: ClassVar[str | None] = None
    # The rest of the wording methods use, which a task may replace; None keeps the math wording. Methods
    # ask the task for it (no method imports a task): `answer_format` closes every request for a new
    # solution (Self-Refine's refine, RRR's retry; None: SCoRe's "Final Answer: ..." sentence,
    # harness.prompts.ANSWER_FORMAT, see `answer_format_for`); `review_system` and `review_request`
    # ({problem}, {solution}) are Self-Refine's feedback request; `reflect_instruction` is RRR's.
    answer_format: ClassVar[str | None] = None
    review_system: ClassVar[str | None] = None
    review_request: ClassVar[str | None] = None
    reflect_instruction: ClassVar[str | None] = None

    @abstractmethod
    def load(self, split: str, data_dir: str | None = None) -> list[Item]: ...

    @abstractmethod
    def prompt(self, item: Item) -> list[Message]: ...

    @abstractmethod
    def grade(self, item: Item, response: str) -> Grade: ...

    def data_files(self, split: str) -> list[str]:
        """Paths (relative to the data dir) that `load(split)` reads, for the manifest's sha256."""
        return []

    def item_from_record(self, record: dict[str, Any], where: str) -> Item:
        """Build an item from a `harness grade` input line (gold `answer` plus task fields)."""
        missing = [k for k in self.grade_fields if k not in record]
        if missing:
            raise HarnessError(f"{where}: missing field(s) {', '.join(missing)}")
        return Item(id=where, question=str(record.get("question", "")), answer=str(record["answer"]), meta={})

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise HarnessError(f"task {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")


TASKS: Registry[type[Task]] = Registry("task", "harness.tasks")
register_task = TASKS.register


def get_task(name: str) -> Task:
    return TASKS.get(name)()
