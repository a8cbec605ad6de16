"""Loading the real offline files, and failing cleanly (file:line, exit 2, no hang) on broken ones."""

from __future__ import annotations

import json
import time

import pytest

from harness import data
from harness.data import load_records, read_jsonl
from harness.errors import HarnessError
from harness.task import get_task


@pytest.mark.parametrize(
    "relpath, rows",
    [("gsm8k/train.jsonl", 7473), ("gsm8k/test.jsonl", 1319), ("math/train.jsonl", 7500),
     ("math/test.jsonl", 5000), ("math/math500.jsonl", 500)],
)
def test_row_counts_of_the_shared_files(data_dir, relpath, rows):
    assert len(read_jsonl(data_dir / relpath)) == rows


def test_gsm8k_items_carry_the_number_after_hashes(data_dir):
    items = get_task("gsm8k").load("train", data_dir)
    assert len(items) == 7473 and len(get_task("gsm8k").load("test", data_dir)) == 1319
    assert items[0].answer == "72"  # Natalia's clips: "#### 72"
    with_commas = [i for i in items if "#### " in i.meta["solution"] and "," in i.meta["solution"].rsplit("####", 1)[1]]
    assert len(with_commas) == 79 and all("," not in i.answer for i in with_commas)


def test_math_items_use_answer_field_or_last_boxed(data_dir):
    math500 = get_task("math500").load("test", data_dir)
    assert len(math500) == 500
    assert math500[0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert math500[0].meta == {"level": 2, "subject": "Precalculus"}
    test = get_task("math").load("test", data_dir)
    assert len(test) == 5000
    first = test[0]  # "...the graph has $\boxed{2}$ vertical asymptotes."
    assert (first.id, first.answer, first.meta) == ("test/algebra/1.json", "2", {"level": 3, "subject": "Algebra"})
    # Nested braces: \boxed{\dfrac{9}{7}} must come out whole.
    assert next(i for i in test if i.id == "test/algebra/10.json").answer == "10"
    assert any(i.answer == r"\dfrac{9}{7}" for i in test)


def test_math_train_skips_the_two_upstream_rows_with_an_empty_box(data_dir, caplog):
    items = get_task("math").load("train", data_dir)
    assert len(items) == 7498
    assert "train.jsonl:5342" in caplog.text and "train.jsonl:5344" in caplog.text
    assert sum(1 for i in items if i.meta["level"] is None) == 2  # the two "Level ?" rows are kept


def test_math500_train_is_math_train_plus_test_minus_math500(data_dir):
    train = get_task("math500").load("train", data_dir)
    held_out = {i.id for i in get_task("math500").load("test", data_dir)}
    assert len(train) == 7498 + 4500
    assert not held_out & {i.id for i in train}


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"question": "q", "answer": "#### 4"}', '{"question": "q", "answer": '], "test.jsonl:2: invalid JSON"),
        (['{"question": "q"}'], "test.jsonl:1: missing field(s) answer"),
        (['["question", "answer"]'], "test.jsonl:1: expected a JSON object"),
        (['{"question": "q", "answer": "no hashes"}'], "test.jsonl:1: answer has no '#### <number>' line"),
        (['{"question": "q", "answer": "#### x"}'], "test.jsonl:1: final answer 'x' is not a number"),
    ],
)
def test_broken_files_name_file_and_line(tmp_path, lines, message):
    _write(tmp_path / "gsm8k" / "test.jsonl", lines)
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_task("gsm8k").load("test", tmp_path)


def test_missing_file_in_data_dir_is_one_line_error(tmp_path):
    with pytest.raises(HarnessError, match=r"gsm8k/test.jsonl: not found"):
        get_task("gsm8k").load("test", tmp_path)


def test_unknown_split_lists_the_splits():
    with pytest.raises(HarnessError, match="splits: train, test"):
        get_task("gsm8k").load("validation")


def test_no_data_dir_and_no_hub_fails_fast_naming_the_variable(monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(data, "HUB_HOST", "localhost")  # nothing listens on 443 here: refused at once
    start = time.monotonic()
    with pytest.raises(HarnessError, match="HARNESS_DATA_DIR"):
        load_records("gsm8k/test.jsonl", lambda: pytest.fail("must not try the hub"), None)
    assert time.monotonic() - start < 5


def test_env_variable_points_at_local_files(monkeypatch, tmp_path):
    _write(tmp_path / "gsm8k" / "train.jsonl", [json.dumps({"question": "1+1?", "answer": "#### 2"})])
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    (item,) = get_task("gsm8k").load("train")
    assert (item.question, item.answer) == ("1+1?", "2")
