"""Numbers the papers report, for `harness compare --reported` (percent; no intervals, no n).

Each row keeps its source so a table that shows it can cite it. The values are copied as printed.
"""

from __future__ import annotations

from dataclasses import dataclass

SCORE_TABLE_2 = ("Kumar et al., 2024, Training Language Models to Self-Correct via Reinforcement Learning "
                 "(arXiv:2409.12917), Table 2: MATH500, Gemini 1.5 Flash")
A2C_TABLE_IV = ("Isaev & Ilyushin, Development of method for self-correction of large language models via "
                "reinforcement learning, International Journal of Open Information Technologies "
                "(http://www.injoit.org/index.php/j1/article/view/2189), Table IV: mathematical problem solving")


@dataclass(frozen=True)
class ReportedRow:
    label: str  # the method (and model) as the paper names it
    short_source: str  # what the table's method column shows after the label
    source: str  # the full citation
    acc_t1: float
    acc_t2: float
    delta: float
    i_to_c: float
    c_to_i: float


def _rows(source: str, short: str, table: list[tuple[str, float, float, float, float, float]]) -> list[ReportedRow]:
    return [ReportedRow(label, short, source, *numbers) for label, *numbers in table]


REPORTED: list[ReportedRow] = [
    *_rows(SCORE_TABLE_2, "SCoRe Tab. 2, MATH500", [
        # method            Acc@t1 Acc@t2 Δ(t1,t2) Δi→c  Δc→i
        ("Base",            52.6,  41.4,  -11.2,   4.6,  15.8),
        ("Self-Refine",     52.8,  51.8,  -1.0,    3.2,  4.2),
        ("STaR",            53.6,  54.0,  0.4,     2.6,  2.2),
        ("Pair-SFT",        52.4,  54.2,  1.8,     5.4,  3.6),
        ("SCoRe",           60.0,  64.4,  4.4,     5.8,  1.4),
    ]),
    *_rows(A2C_TABLE_IV, "A2C Tab. IV", [
        ("A2C, Gemma 7B",       42.3, 46.1, 3.8, 4.5, 1.4),
        ("A2C, Gemma 2 2B",     39.0, 42.2, 3.2, 6.2, 0.3),
        ("A2C, LLaMA 3 8B",     44.0, 47.6, 3.6, 5.5, 2.2),
        ("A2C, LLaMA 3.2 3B",   41.5, 43.2, 1.7, 4.2, 1.9),
    ]),
]


def reported_rows() -> list[ReportedRow]:
    return list(REPORTED)


def sources() -> list[tuple[str, str]]:
    """(short name, full citation) of every source, in table order."""
    seen: dict[str, str] = {}
    for row in REPORTED:
        seen.setdefault(row.short_source, row.source)
    return list(seen.items())
