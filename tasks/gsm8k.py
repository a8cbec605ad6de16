"""GSM8K (Cobbe et al., 2021): grade-school word problems; the gold is the integer after `####`."""

from __future__ import annotations

from harness.data import hub_rows, load_records
from harness.errors import HarnessError
from harness.grading import grade_number
from harness.grading.numeric import to_fraction
from harness.prompts import problem_chat
from harness.task import Grade, Item, Message, Task, register_task


def gold_from_solution(solution: str, where: str) -> str:
    if "####" not in solution:
        raise HarnessError(f"{where}: answer has no '#### <number>' line")
    gold = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if to_fraction(gold) is None:
        raise HarnessError(f"{where}: final answer {gold!r} is not a number")
    return gold


@register_task("gsm8k")
class GSM8K(Task):
    description = "Grade-school math word problems (openai/gsm8k, config main); numeric answers."
    splits = {"train": 7473, "test": 1319}

    def load(self, split: str, data_dir: str | None = None) -> list[Item]:
        self.check_split(split)
        rows = load_records(
            f"gsm8k/{split}.jsonl", lambda: hub_rows("openai/gsm8k", "main", split), data_dir, ("question", "answer")
        )
        return [
            Item(
                id=f"gsm8k/{split}/{i}",
                question=rec["question"],
                answer=gold_from_solution(rec["answer"], where),
                meta={"solution": rec["answer"]},
            )
            for i, (where, rec) in enumerate(rows)
        ]

    def data_files(self, split: str) -> list[str]:
        return [f"gsm8k/{split}.jsonl"]

    def prompt(self, item: Item) -> list[Message]:
        return problem_chat(item.question)

    def grade(self, item: Item, response: str) -> Grade:
        return grade_number(item.answer, response)

    def item_from_record(self, record: dict, where: str) -> Item:
        item = super().item_from_record(record, where)
        if to_fraction(item.answer) is None:
            raise HarnessError(f"{where}: gold answer {item.answer!r} is not a number")
        return item
