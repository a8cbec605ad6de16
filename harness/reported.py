"""Numbers the papers report, for `harness compare --reported` (percent; no intervals, no n).

Each row keeps its source so a table that shows it can cite it. The values are copied as printed; a
statistic a paper does not give is None (a blank cell). A row names the harness tasks it is
comparable with; rows that name none (the math tables) are shown for every task no row names.
"""

from __future__ import annotations

from dataclasses import dataclass

SCORE_TABLE_2 = ("Kumar et al., 2024, Training Language Models to Self-Correct via Reinforcement Learning "
                 "(arXiv:2409.12917), Table 2: MATH500, Gemini 1.5 Flash")
SCORE_TABLE_3 = ("Kumar et al., 2024, Training Language Models to Self-Correct via Reinforcement Learning "
                 "(arXiv:2409.12917), Table 3: HumanEval (trained on MBPP), Gemini 1.0 Pro")
SCORE_TABLE_3_MBPPR = ("Kumar et al., 2024, Training Language Models to Self-Correct via Reinforcement Learning "
                       "(arXiv:2409.12917), Table 3, MBPP-R column: accuracy of correcting given incorrect "
                       "first attempts on MBPP (shown as Acc@t2), Gemini 1.0 Pro")
SCORE_TABLE_4 = ("Kumar et al., 2024, Training Language Models to Self-Correct via Reinforcement Learning "
                 "(arXiv:2409.12917), Table 4: ablations on MATH, Gemini 1.5 Flash")
A2C_TABLE_IV = ("Isaev & Ilyushin, Development of method for self-correction of large language models via "
                "reinforcement learning, International Journal of Open Information Technologies "
                "(http://www.injoit.org/index.php/j1/article/view/2189), Table IV: mathematical problem solving")


@dataclass(frozen=True)
class ReportedRow:
    label: str  # the method (and model) as the paper names it
    short_source: str  # what the table's method column shows after the label
    source: str  # the full citation
    acc_t1: float | None
    acc_t2: float | None
    delta: float | None
    i_to_c: float | None
    c_to_i: float | None
    tasks: tuple[str, ...] = ()  # the harness tasks these numbers compare with; () = the math tasks


def _rows(source: str, short: str, table: list[tuple], tasks: tuple[str, ...] = ()) -> list[ReportedRow]:
    return [ReportedRow(label, short, source, *numbers, tasks=tasks) for label, *numbers in table]


REPORTED: list[ReportedRow] = [
    *_rows(SCORE_TABLE_2, "SCoRe Tab. 2, MATH500", [
        # method            Acc@t1 Acc@t2 Δ(t1,t2) Δi→c  Δc→i
        ("Base",            52.6,  41.4,  -11.2,   4.6,  15.8),
        ("Self-Refine",     52.8,  51.8,  -1.0,    3.2,  4.2),
        ("STaR",            53.6,  54.0,  0.4,     2.6,  2.2),
        ("Pair-SFT",        52.4,  54.2,  1.8,     5.4,  3.6),
        ("SCoRe",           60.0,  64.4,  4.4,     5.8,  1.4),
    ]),
    *_rows(SCORE_TABLE_4, "SCoRe Tab. 4, MATH", [
        # ablation                               Acc@t1 Acc@t2 Δ(t1,t2) Δi→c  Δc→i
        ("SCoRe w/o multi-turn training",         61.8,  59.4,  -2.4,    None, None),
        ("SCoRe w/o Stage I",                     59.2,  61.4,  2.2,     None, None),
        ("SCoRe w/o reward shaping",              60.0,  62.6,  2.6,     None, None),
        ("SCoRe w/ STaR instead of REINFORCE",    56.2,  58.4,  2.2,     None, None),
    ]),
    *_rows(SCORE_TABLE_3, "SCoRe Tab. 3, HumanEval", [
        # method            Acc@t1 Acc@t2 Δ(t1,t2) Δi→c  Δc→i
        ("Base",            53.7,  56.7,  3.0,     7.9,  4.9),
        ("Self-Refine",     53.7,  52.5,  -1.2,    9.8,  11.0),
        ("Pair-SFT",        56.1,  54.3,  -1.8,    4.3,  6.1),
        ("SCoRe",           52.4,  64.6,  12.2,    15.2, 3.0),
    ], tasks=("humaneval",)),
    *_rows(SCORE_TABLE_3_MBPPR, "SCoRe Tab. 3, MBPP-R", [
        ("Base",            None,  47.3,  None,    None, None),
        ("Self-Refine",     None,  30.7,  None,    None, None),
        ("Pair-SFT",        None,  59.8,  None,    None, None),
        ("SCoRe",           None,  60.6,  None,    None, None),
    ], tasks=("mbpp",)),
    *_rows(A2C_TABLE_IV, "A2C Tab. IV", [
        ("A2C, Gemma 7B",       42.3, 46.1, 3.8, 4.5, 1.4),
        ("A2C, Gemma 2 2B",     39.0, 42.2, 3.2, 6.2, 0.3),
        ("A2C, LLaMA 3 8B",     44.0, 47.6, 3.6, 5.5, 2.2),
        ("A2C, LLaMA 3.2 3B",   41.5, 43.2, 1.7, 4.2, 1.9),
    ]),
]


def reported_rows(task: str | None = None) -> list[ReportedRow]:
    """The rows comparable with `task` (all rows when None): those naming it, else the math rows."""
    if task is None:
        return list(REPORTED)
    named = [row for row in REPORTED if task in row.tasks]
    return named or [row for row in REPORTED if not row.tasks]


def sources(task: str | None = None) -> list[tuple[str, str]]:
    """(short name, full citation) of every source of `reported_rows(task)`, in table order."""
    seen: dict[str, str] = {}
    for row in reported_rows(task):
        seen.setdefault(row.short_source, row.source)
    return list(seen.items())
