"""A procedural task a tiny random model can learn in well under a minute, for the learning tests.

Each item asks for a number; a response is correct when its first character is a digit. A random
2-layer model starts at the share of its vocabulary that begins with a digit (a few percent), so
REINFORCE has signal from the first steps, and a policy that learned the task scores near 1.
"""

from __future__ import annotations

from harness.task import Grade, Item, Task, register_task


@register_task("toy-digit")
class ToyDigit(Task):
    name = "toy-digit"
    description = "Start the answer with a digit (learning tests)."
    splits = {"train": 64, "test": 64}

    def load(self, split: str, data_dir: str | None = None) -> list[Item]:
        self.check_split(split)
        return [Item(f"toy/{split}/{i}", f"number {i}", "digit") for i in range(self.splits[split])]

    def prompt(self, item: Item) -> list[dict[str, str]]:
        return [{"role": "user", "content": item.question}]

    def grade(self, item: Item, response: str) -> Grade:
        first = response[:1]
        ok = first.isdigit()
        return Grade(ok, first or None, "starts with a digit" if ok else "does not start with a digit")
