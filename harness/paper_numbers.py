"""Numbers the papers report, for `harness compare --reported` (percent; no intervals, no n).

Each row keeps its source so a table that shows it can cite it. The values are copied as printed; a
statistic a paper does not give is None (a blank cell), and a row whose printed Δ disagrees with its
printed Δi→c − Δc→i says so (`inconsistent`; the tables mark its Δ with †). A row names the harness
tasks it was measured on and is shown only in a comparison of one of them: no paper here reported
GSM8K or Countdown, so those tables get no reported rows. A row also names its evaluation protocol
(`--feedback`): "none" (intrinsic self-correction, SCoRe's tables) or "oracle" (retry only after the
verifier said an attempt was wrong, RRR's protocol); it is shown only beside rows measured the same way.

Tasks: SCoRe's Table 2 is MATH500 (`math500`); its Table 4 ablations are on MATH (`math`). The A2C
paper's Table IV ("mathematical problem solving") is on MATH; it is shown for `math` and also for
`math500`, MATH500 being a uniformly drawn subset of MATH's test split (Lightman et al., 2023), so its
expected accuracy is MATH's.
"""

from __future__ import annotations

from dataclasses import dataclass

# |Δ − (Δi→c − Δc→i)| above this (points) is an inconsistency; below it, rounding of printed values.
TOLERANCE = 0.05

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
    tasks: tuple[str, ...] = ()  # the harness tasks these numbers compare with (shown for no other)
    protocol: str = "none"  # the evaluation protocol they were measured under (harness.method.FEEDBACKS)

    @property
    def inconsistent(self) -> bool:
        """Whether the printed Δ(t1,t2) differs from the printed Δi→c − Δc→i by more than TOLERANCE."""
        if None in (self.delta, self.i_to_c, self.c_to_i):
            return False
        return round(abs(self.delta - (self.i_to_c - self.c_to_i)), 6) > TOLERANCE


def _rows(source: str, short: str, table: list[tuple], tasks: tuple[str, ...],
          protocol: str = "none") -> list[ReportedRow]:
    return [ReportedRow(label, short, source, *numbers, tasks=tasks, protocol=protocol) for label, *numbers in table]


REPORTED: list[ReportedRow] = [
    *_rows(SCORE_TABLE_2, "SCoRe Tab. 2, MATH500", [
        # method            Acc@t1 Acc@t2 Δ(t1,t2) Δi→c  Δc→i
        ("Base",            52.6,  41.4,  -11.2,   4.6,  15.8),
        ("Self-Refine",     52.8,  51.8,  -1.0,    3.2,  4.2),
        ("STaR",            53.6,  54.0,  0.4,     2.6,  2.2),
        ("Pair-SFT",        52.4,  54.2,  1.8,     5.4,  3.6),
        ("SCoRe",           60.0,  64.4,  4.4,     5.8,  1.4),
    ], tasks=("math500",)),
    *_rows(SCORE_TABLE_4, "SCoRe Tab. 4, MATH", [
        # ablation                               Acc@t1 Acc@t2 Δ(t1,t2) Δi→c  Δc→i
        ("SCoRe w/o multi-turn training",         61.8,  59.4,  -2.4,    None, None),
        ("SCoRe w/o Stage I",                     59.2,  61.4,  2.2,     None, None),
        ("SCoRe w/o reward shaping",              60.0,  62.6,  2.6,     None, None),
        ("SCoRe w/ STaR instead of REINFORCE",    56.2,  58.4,  2.2,     None, None),
    ], tasks=("math",)),
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
    # As printed: each row's Δ is Acc@t2 − Acc@t1 but not Δi→c − Δc→i (e.g. 3.8 against 4.5 − 1.4 = 3.1).
    *_rows(A2C_TABLE_IV, "A2C Tab. IV", [
        ("A2C, Gemma 7B",       42.3, 46.1, 3.8, 4.5, 1.4),
        ("A2C, Gemma 2 2B",     39.0, 42.2, 3.2, 6.2, 0.3),
        ("A2C, LLaMA 3 8B",     44.0, 47.6, 3.6, 5.5, 2.2),
        ("A2C, LLaMA 3.2 3B",   41.5, 43.2, 1.7, 4.2, 1.9),
    ], tasks=("math", "math500")),
    # RRR (Bensal et al., 2025) reports first- and second-try accuracy under the oracle protocol; its rows,
    # when added, take protocol="oracle" (and the tasks they were measured on).
]


def reported_rows(task: str | None = None, protocol: str | None = "none") -> list[ReportedRow]:
    """The rows a comparison of `task` under evaluation protocol `protocol` shows: those measured on that
    task under that protocol (none for a task no paper reported). None: any task, any protocol."""
    return [row for row in REPORTED
            if (task is None or task in row.tasks) and (protocol is None or row.protocol == protocol)]


def sources(task: str | None = None, protocol: str | None = "none") -> list[tuple[str, str]]:
    """(short name, full citation) of every source of `reported_rows(task, protocol)`, in table order."""
    seen: dict[str, str] = {}
    for row in reported_rows(task, protocol):
        seen.setdefault(row.short_source, row.source)
    return list(seen.items())
