"""Our MATH grader against lm-eval `minerva_math500`'s `math_verify` metric on REAL responses of the
embedded model (both attempts on the first MATH500 test problems, generated once and committed as
tests/data/math500_embedded_responses.jsonl: one line per attempt with id, gold, response, attempt,
model and settings). Skipped, with the reason, while that file is absent.

lm-eval's verdict is computed exactly as its task computes it: `process_docs` on the problem's MATH500
row (gold = its solution's last box; the row comes from the local data, else `$\\boxed{gold}$`), then
`process_results` on the response. Every disagreement must be listed below with its reason; at most 2.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import pytest

from harness.task import Item, get_task

DATA = Path(__file__).parent / "data" / "math500_embedded_responses.jsonl"
MAX_DISAGREEMENTS = 2

# (problem id, attempt) -> (our verdict, why lm-eval's math_verify says otherwise)
DISAGREEMENTS: dict[tuple[str, int], tuple[bool, str]] = {}

pytestmark = [
    pytest.mark.skipif(find_spec("lm_eval") is None, reason="lm-eval is not installed"),
    pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA.name} (real MATH500 responses) is not committed yet"),
]


def _solutions(data_dir: Path) -> dict[str, str]:
    path = data_dir / "math" / "math500.jsonl"
    if not path.is_file():
        return {}
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {row["unique_id"]: row["solution"] for row in rows}


def verdicts(records: list[dict], solutions: dict[str, str]) -> list[dict]:
    """Per response: ours (verdict, extracted, reason), lm-eval's math_verify, and plain math_verify."""
    import datasets
    from lm_eval.tasks.minerva_math import utils as minerva
    from math_verify import parse, verify

    rows = [{"problem": "", "solution": solutions.get(r["id"], f"$\\boxed{{{r['gold']}}}$")} for r in records]
    docs = minerva.process_docs(datasets.Dataset.from_list(rows))
    task = get_task("math500")
    found = []
    for record, doc in zip(records, docs):
        ours = task.grade(Item(record["id"], "", record["gold"]), record["response"])
        found.append({
            "key": (record["id"], int(record["attempt"])), "ours": ours.correct, "extracted": ours.extracted,
            "reason": ours.reason, "lm_eval": bool(minerva.process_results(doc, [record["response"]])["math_verify"]),
            "plain": bool(verify(parse(doc["solution"]), parse(record["response"]))),
        })
    return found


def test_grader_agrees_with_lm_eval_math_verify_on_real_math500_responses(data_dir):
    records = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(records) >= 100
    assert {"id", "gold", "response", "attempt", "model", "settings"} <= set(records[0])
    found = verdicts(records, _solutions(data_dir))
    differ = {v["key"]: v for v in found if v["ours"] != v["lm_eval"]}
    report = "\n".join(f"{key}: ours {v['ours']} ({v['reason']}; read {v['extracted']!r}), lm-eval {v['lm_eval']}, "
                       f"plain math_verify {v['plain']}" for key, v in differ.items())
    assert len(DISAGREEMENTS) <= MAX_DISAGREEMENTS and all(len(why) > 20 for _, why in DISAGREEMENTS.values())
    assert {key: v["ours"] for key, v in differ.items()} == {k: ours for k, (ours, _) in DISAGREEMENTS.items()}, \
        f"{len(differ)} of {len(found)} disagree with lm-eval's math_verify:\n{report}"
