"""`--reported` (issue 21): a paper's rows only for the task it reported, and a † on every row whose printed
Δ(t1,t2) is not its printed Δi→c − Δc→i."""

from __future__ import annotations

import pytest

from harness.paper_numbers import REPORTED, TOLERANCE, ReportedRow, reported_rows, sources
from harness.tables import INCONSISTENT_NOTE, columns, render_csv, render_latex, render_markdown, reported_row

SHORT = {"math500": {"SCoRe Tab. 2, MATH500", "A2C Tab. IV"}, "math": {"SCoRe Tab. 4, MATH", "A2C Tab. IV"},
         "humaneval": {"SCoRe Tab. 3, HumanEval"}, "mbpp": {"SCoRe Tab. 3, MBPP-R"}}


@pytest.mark.parametrize("task", ["gsm8k", "countdown", "toy-digit", "nosuch"])
def test_no_paper_reported_these_tasks(task):
    assert reported_rows(task) == [] and sources(task) == []


@pytest.mark.parametrize("task, expected", SHORT.items())
def test_rows_follow_the_task_their_paper_reported(task, expected):
    rows = reported_rows(task)
    assert {r.short_source for r in rows} == expected
    assert all(task in r.tasks for r in rows)
    assert [short for short, _ in sources(task)] == list(dict.fromkeys(r.short_source for r in rows))


def test_every_row_names_a_real_task():
    from harness.task import TASKS

    names = set(TASKS.names())
    assert all(row.tasks and set(row.tasks) <= names for row in REPORTED)
    assert len(reported_rows("math500")) == 9 and len(reported_rows("math")) == 8 and len(reported_rows(None)) == 21


def test_the_dagger_marks_exactly_the_rows_printed_inconsistently():
    def inconsistent(r: ReportedRow) -> bool:
        return None not in (r.delta, r.i_to_c, r.c_to_i) and abs(r.delta - (r.i_to_c - r.c_to_i)) > TOLERANCE + 1e-9

    assert TOLERANCE == 0.05
    flagged = [r.label for r in REPORTED if r.inconsistent]
    assert flagged == [r.label for r in REPORTED if inconsistent(r)]
    assert flagged == ["A2C, Gemma 7B", "A2C, Gemma 2 2B", "A2C, LLaMA 3 8B", "A2C, LLaMA 3.2 3B"]  # e.g. 3.8 vs 3.1
    # within the tolerance (rounding of printed values) or a blank statistic: not marked
    assert not ReportedRow("x", "s", "src", 50.0, 53.0, 3.0, 4.05, 1.0).inconsistent
    assert ReportedRow("x", "s", "src", 50.0, 53.0, 3.0, 4.1, 1.0).inconsistent
    assert not ReportedRow("x", "s", "src", 50.0, 53.0, 3.0, None, None).inconsistent


@pytest.mark.parametrize("task", ["math500", "math", "humaneval"])
def test_tables_put_the_dagger_on_the_delta_and_explain_it(task):
    rows = [reported_row(r) for r in reported_rows(task)]
    markdown = render_markdown(rows, 2, "caption", sources(task))
    marked = [line for line in markdown.splitlines() if line.startswith("| ") and "†" in line]
    expected = [r for r in reported_rows(task) if r.inconsistent]
    assert len(marked) == len(expected)
    for line, r in zip(marked, expected):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0].startswith(r.label) and cells[3] == f"{r.delta:+.1f}†"  # Δ(t1,t2), after Acc@t1, Acc@t2
        assert cells.count(f"{r.delta:+.1f}†") == 1 and sum("†" in c for c in cells) == 1
    assert (INCONSISTENT_NOTE in markdown) == bool(expected)
    latex = render_latex(rows, 2, "caption", "tab:x")
    assert latex.count(r"$^\dagger$") == len(expected) + bool(expected)  # the cells and the caption's note
    assert "†" not in render_csv(rows, 2)  # the CSV keeps plain numbers
    if task == "math500":
        assert "| A2C, Gemma 7B (reported, A2C Tab. IV) | 42.3 | 46.1 | +3.8† | 4.5 | 1.4 |" in markdown
        assert "| SCoRe (reported, SCoRe Tab. 2, MATH500) | 60.0 | 64.4 | +4.4 | 5.8 | 1.4 |" in markdown
    assert [c.key for c in columns(2)][2] == "delta"
