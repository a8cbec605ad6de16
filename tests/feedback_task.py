"""A task whose verdicts the test decides, for the `--feedback oracle` tests (tests/test_feedback.py).

Item i's gold answer is "right" or "wrong"; every response to a "right" item is correct and every response
to a "wrong" one incorrect, whatever the (tiny random) model writes. A module of its own, so grading
workers import only this to unpickle the task.
"""

from __future__ import annotations

from harness.task import Grade, Item, Task, register_task

VERDICTS = ("right", "wrong", "right", "wrong")


@register_task("feedback-toy")
class FeedbackToy(Task):
    name = "feedback-toy"
    description = "Verdicts fixed per item (oracle feedback tests)."
    splits = {"test": len(VERDICTS)}

    def load(self, split: str, data_dir: str | None = None) -> list[Item]:
        self.check_split(split)
        return [Item(f"toy/{split}/{i}", f"number {i}", verdict) for i, verdict in enumerate(VERDICTS)]

    def prompt(self, item: Item) -> list[dict[str, str]]:
        return [{"role": "user", "content": item.question}]

    def grade(self, item: Item, response: str) -> Grade:
        ok = item.answer == "right"
        return Grade(ok, response[:8] or None, "fixed verdict")
