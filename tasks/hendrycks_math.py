"""MATH (Hendrycks et al., 2021) and its 500-problem test subset MATH500 (Lightman et al., 2023).

Gold = the `answer` field where present (MATH500), else the last \\boxed{...} of the solution.
`math500`'s train split is the PRM800K/SCoRe training set: MATH train (7500) plus the MATH test
problems outside MATH500 (4500), 12000 in all.
"""

from __future__ import annotations

import logging
from typing import Any

from harness.data import hub_rows, load_records
from harness.errors import HarnessError
from harness.grading import grade_latex, last_boxed
from harness.prompts import problem_chat
from harness.task import Grade, Item, Message, Task, register_task

logger = logging.getLogger(__name__)

SUBJECT_CONFIGS = (
    "algebra", "counting_and_probability", "geometry", "intermediate_algebra",
    "number_theory", "prealgebra", "precalculus",
)  # EleutherAI/hendrycks_math has one config per subject


def _hub_math(split: str) -> list[dict[str, Any]]:
    return [row for config in SUBJECT_CONFIGS for row in hub_rows("EleutherAI/hendrycks_math", config, split)]


def _level(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    digits = str(value).replace("Level", "").strip()
    return int(digits) if digits.isdigit() else None  # two train rows say "Level ?"


def to_item(rec: dict[str, Any], where: str, fallback_id: str) -> Item | None:
    """The item, or None when upstream gives no gold (one MATH train solution boxes nothing: `\\boxed{}`)."""
    gold = rec.get("answer") or last_boxed(rec.get("solution", ""))
    if gold is None:
        raise HarnessError(f"{where}: no 'answer' field and no \\boxed{{}} in 'solution'")
    if not gold.strip():
        logger.warning("%s: skipped, the solution's \\boxed{} is empty", where)
        return None
    return Item(
        id=rec.get("unique_id") or fallback_id,
        question=rec["problem"],
        answer=gold,
        meta={"level": _level(rec.get("level")), "subject": rec.get("subject") or rec.get("type")},
    )


class _MathTask(Task):
    grade_fields = ("answer",)

    def _records(self, name: str, data_dir: str | None) -> list[tuple[str, dict[str, Any]]]:
        if name == "math500":
            hub = lambda: hub_rows("HuggingFaceH4/MATH-500", None, "test")  # noqa: E731
        else:
            hub = lambda: _hub_math(name)  # noqa: E731
        return load_records(f"math/{name}.jsonl", hub, data_dir, ("problem", "solution"))

    def _items(self, name: str, data_dir: str | None) -> list[Item]:
        items = (to_item(rec, where, f"{name}/{i}") for i, (where, rec) in enumerate(self._records(name, data_dir)))
        return [item for item in items if item is not None]

    def prompt(self, item: Item) -> list[Message]:
        return problem_chat(item.question)

    def grade(self, item: Item, response: str) -> Grade:
        return grade_latex(item.answer, response)


@register_task("math")
class MATH(_MathTask):
    description = "Competition mathematics, 7 subjects x 5 levels; LaTeX answers graded with math-verify."
    splits = {"train": 7500, "test": 5000}

    def load(self, split: str, data_dir: str | None = None) -> list[Item]:
        self.check_split(split)
        return self._items(split, data_dir)

    def data_files(self, split: str) -> list[str]:
        return [f"math/{split}.jsonl"]


@register_task("math500")
class MATH500(_MathTask):
    description = "MATH500 test subset; train = MATH train + the 4500 other MATH test problems."
    splits = {"train": 12000, "test": 500}

    def load(self, split: str, data_dir: str | None = None) -> list[Item]:
        self.check_split(split)
        if split == "test":
            return self._items("math500", data_dir)
        held_out = {item.id for item in self._items("math500", data_dir)}
        rest = [item for item in self._items("test", data_dir) if item.id not in held_out]
        return self._items("train", data_dir) + rest

    def data_files(self, split: str) -> list[str]:
        return ["math/math500.jsonl"] + (["math/train.jsonl", "math/test.jsonl"] if split == "train" else [])
