"""Comparison tables as files: Markdown and LaTeX for people (values with 95% intervals, percent),
CSV for machines (value, low and high in separate numeric columns). Rendering is a pure function of
the rows, so the same samples always give the same bytes."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.diagnostics import Compute, RowDiagnostics, budget_note
from harness.method import feedback_label
from harness.metrics import TurnMetrics
from harness.paper_numbers import ReportedRow

Cell = tuple[float, "float | None", "float | None"]  # (value, low, high) in percent; low/high None: no interval


@dataclass(frozen=True)
class TableRow:
    label: str
    kind: str  # "measured" | "reported"
    cells: dict[str, Cell] = field(default_factory=dict)  # statistic key -> cell; a missing key is blank
    n: int | None = None
    mcnemar_p: float | None = None
    tokens_per_problem: float | None = None
    source: str = ""
    diagnostics: RowDiagnostics | None = None  # measured rows: edit ratios, answer changes, transitions
    compute: Compute | None = None  # measured rows: tokens, seconds, FLOPs
    p_vs_base: float | None = None  # exact McNemar p of Acc@t2 against the `base` row
    flagged: tuple[str, ...] = ()  # statistic keys whose printed value is marked † (see INCONSISTENT_NOTE)


@dataclass(frozen=True)
class Column:
    key: str
    markdown: str
    latex: str
    signed: bool = False


def columns(turns: int) -> list[Column]:
    acc = [Column(f"acc_t{k}", f"Acc@t{k}", f"Acc@t$_{k}$") for k in range(1, turns + 1)]
    return [*acc, Column("delta", "Δ(t1,t2)", r"$\Delta(t_1,t_2)$", signed=True),
            Column("i_to_c", "Δi→c", r"$\Delta^{i\to c}$"), Column("c_to_i", "Δc→i", r"$\Delta^{c\to i}$")]


def measured_row(label: str, metrics: TurnMetrics, tokens_per_problem: float,
                 diagnostics: RowDiagnostics | None = None, compute: Compute | None = None,
                 p_vs_base: float | None = None) -> TableRow:
    estimates = [*metrics.accuracy, metrics.delta, metrics.incorrect_to_correct, metrics.correct_to_incorrect]
    keys = [c.key for c in columns(len(metrics.accuracy))]
    cells = {key: (e.value * 100, e.low * 100, e.high * 100) for key, e in zip(keys, estimates)}
    return TableRow(label, "measured", cells, metrics.n, metrics.mcnemar_p, tokens_per_problem,
                    diagnostics=diagnostics, compute=compute, p_vs_base=p_vs_base)


def reported_row(row: ReportedRow) -> TableRow:
    values = {"acc_t1": row.acc_t1, "acc_t2": row.acc_t2, "delta": row.delta, "i_to_c": row.i_to_c, "c_to_i": row.c_to_i}
    return TableRow(f"{feedback_label(row.label, row.protocol)} (reported, {row.short_source})", "reported",
                    {k: (v, None, None) for k, v in values.items() if v is not None}, source=row.short_source,
                    flagged=("delta",) if row.inconsistent else ())


MARK = "†"
INCONSISTENT_NOTE = f"{MARK} Δ ≠ Δi→c − Δc→i as printed in the source."


@dataclass(frozen=True)
class DiagnosticColumn:
    markdown: str
    latex: str
    csv: str  # the CSV column ("" for Method, which the CSV already has)
    value: Callable[[TableRow], Any]  # for the CSV
    format: str = ""
    per_problem: bool = False  # Markdown and LaTeX show value / n; the CSV holds the row's total

    def text(self, row: TableRow) -> str:
        value = self.value(row)
        if value is not None and self.per_problem:
            value = value / row.compute.n  # type: ignore[union-attr]
        return "" if value is None else format(value, self.format)


def _diagnostic_columns() -> list[DiagnosticColumn]:
    def d(row: TableRow) -> RowDiagnostics:
        return row.diagnostics  # type: ignore[return-value]  (rows without diagnostics are not rendered)

    def c(row: TableRow) -> Compute:
        return row.compute  # type: ignore[return-value]

    transitions = [DiagnosticColumn(t, t.replace("→", r"$\to$"), f"n_{t.replace('→', '_to_')}",
                                    lambda row, t=t: d(row).transitions[t], "d") for t in ("i→c", "c→i", "c→c", "i→i")]
    return [
        DiagnosticColumn("Method", "Method", "", lambda row: row.label, ""),
        DiagnosticColumn("Answer changed %", r"Answer changed \%", "answer_changed_pct",
                         lambda row: d(row).answer_changed * 100, ".1f"),
        DiagnosticColumn("Median edit ratio", "Median edit ratio", "median_edit_ratio",
                         lambda row: d(row).median_edit_ratio, ".3f"),
        *transitions,
        DiagnosticColumn("p vs base (Acc@t2)", r"$p$ vs.\ base", "mcnemar_p_vs_base", lambda row: row.p_vs_base, ".3g"),
        DiagnosticColumn("Gen. tokens/problem", "Gen./problem", "generated_tokens_total",
                         lambda row: c(row).generated_tokens, ".0f", per_problem=True),
        DiagnosticColumn("Prefill tokens/problem", "Prefill/problem", "prefill_tokens_total",
                         lambda row: c(row).prefill_tokens, ".0f", per_problem=True),
        DiagnosticColumn("Seconds/problem", "s/problem", "seconds_total", lambda row: c(row).seconds, ".1f",
                         per_problem=True),
        DiagnosticColumn("N (parameters)", "$N$", "parameters", lambda row: c(row).parameters, ".3g"),
        DiagnosticColumn("Inference FLOPs", "Inference FLOPs", "inference_flops", lambda row: c(row).inference_flops, ".3g"),
        DiagnosticColumn("Training FLOPs", "Training FLOPs", "training_flops", lambda row: c(row).training_flops, ".3g"),
    ]


DIAGNOSTICS = _diagnostic_columns()

DIAGNOSTICS_NOTE = (
    "Answer changed: episodes whose extracted answer at the last attempt differs from attempt 1's (as numbers "
    "where both read as numbers, so 20 = 20.00; the texts when the grader extracted none), %; median edit "
    "ratio: character-level Levenshtein distance between consecutive attempts divided by the longer one's "
    "length (0 = copied, 1 = all new), over all attempt pairs; i→c, c→i, c→c, i→i: problems by verdict at "
    "attempt 1 → attempt 2 (counts); p vs base: exact McNemar test of the row's Acc@t2 against base's on the "
    "same problems; tokens and seconds per problem (seconds: each step's share of its batched generation "
    "round); FLOPs ≈ 2·N·(generated + prefill tokens) over all n problems; training FLOPs ≈ 6·N per token of the "
    "updates' forward and backward passes (policy, critic) + 2·N per token of their forward-only pass "
    "(reference), over whole sequences, prompts included (the training run's log); blank: N unknown.")


def _number(x: float, signed: bool, minus: str) -> str:
    text = f"{x:+.1f}" if signed else f"{x:.1f}"
    if text.lstrip("+-") == "0.0":  # no "-0.0"
        text = "+0.0" if signed else "0.0"
    return text.replace("-", minus)


def cell_text(cell: Cell | None, signed: bool, minus: str = "-") -> str:
    if cell is None:
        return ""
    value, low, high = cell
    text = _number(value, signed, minus)
    if low is not None and high is not None:
        text += f" [{_number(low, signed, minus)}, {_number(high, signed, minus)}]"
    return text


def _marked(row: TableRow, column: Column, text: str, mark: str) -> str:
    return text + mark if text and column.key in row.flagged else text


def _p(row: TableRow) -> str:
    return "" if row.mcnemar_p is None else f"{row.mcnemar_p:.3g}"


def _tokens(row: TableRow) -> str:
    return "" if row.tokens_per_problem is None else f"{row.tokens_per_problem:.0f}"


NOTE = ("Accuracy in %; 95% paired bootstrap confidence intervals in brackets (2000 resamples over problems); "
        "Δ(t1,t2) = Acc@t2 − Acc@t1; Δi→c (Δc→i): problems wrong (right) at attempt 1 and right (wrong) at "
        "attempt 2, as % of all n; McNemar p: exact test of attempt 1 against attempt 2; tokens: generated per problem.")


def render_markdown(rows: list[TableRow], turns: int, caption: str, citations: list[tuple[str, str]] = ()) -> str:
    cols = columns(turns)
    header = ["Method", *(c.markdown for c in cols), "n", "McNemar p", "Tokens/problem"]
    lines = [f"**{caption}**", "", "| " + " | ".join(header) + " |",
             "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|"]
    for row in rows:
        cells = [row.label.replace("|", r"\|"), *(_marked(row, c, cell_text(row.cells.get(c.key), c.signed), MARK)
                                                   for c in cols),
                 "" if row.n is None else str(row.n), _p(row), _tokens(row)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", NOTE]
    for short, full in citations:
        lines.append(f"Reported ({short}): {full}.")
    if any(row.flagged for row in rows):
        lines.append(INCONSISTENT_NOTE)
    diagnosed = [row for row in rows if row.diagnostics is not None]
    if diagnosed:
        lines += ["", "**Diagnostics and compute**", "", "| " + " | ".join(c.markdown for c in DIAGNOSTICS) + " |",
                  "|" + "|".join([":---", *["---:"] * (len(DIAGNOSTICS) - 1)]) + "|"]
        lines += ["| " + " | ".join(c.text(row).replace("|", r"\|") for c in DIAGNOSTICS) + " |" for row in diagnosed]
        lines += ["", DIAGNOSTICS_NOTE]
        note = budget_note({row.label: row.tokens_per_problem for row in diagnosed if row.tokens_per_problem is not None})
        if note:
            lines.append(note)
    return "\n".join(lines) + "\n"


def _csv_number(x: float | None) -> str:
    return "" if x is None else format(x, ".10g")


def render_csv(rows: list[TableRow], turns: int) -> str:
    cols = columns(turns)
    header = ["method", "kind", "source", "n"]
    for c in cols:
        header += [f"{c.key}_pct", f"{c.key}_low_pct", f"{c.key}_high_pct"]
    header += ["mcnemar_p", "tokens_per_problem"]
    diagnosed = any(row.diagnostics is not None for row in rows)
    if diagnosed:
        header += [c.csv for c in DIAGNOSTICS if c.csv]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        line = [row.label, row.kind, row.source, "" if row.n is None else str(row.n)]
        for c in cols:
            value, low, high = row.cells.get(c.key, (None, None, None))
            line += [_csv_number(value), _csv_number(low), _csv_number(high)]
        line += [_csv_number(row.mcnemar_p), _csv_number(row.tokens_per_problem)]
        if diagnosed:
            line += [_csv_number(c.value(row)) if row.diagnostics is not None else "" for c in DIAGNOSTICS if c.csv]
        writer.writerow(line)
    return buffer.getvalue()


def latex_escape(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(ch, ch) for ch in text)


def render_latex(rows: list[TableRow], turns: int, caption: str, label: str) -> str:
    """A booktabs table (pandas Styler.to_latex, hrules=True); reported rows below a rule of their own."""
    import pandas as pd

    cols = columns(turns)
    header = ["Method", *(c.latex for c in cols), "$n$", "McNemar $p$", "Tokens"]
    body = [[latex_escape(row.label),
             *(_marked(row, c, cell_text(row.cells.get(c.key), c.signed, minus="$-$"), r"$^\dagger$") for c in cols),
             "" if row.n is None else str(row.n), _p(row).replace("-", "$-$"), _tokens(row)] for row in rows]
    frame = pd.DataFrame(body, columns=header)
    note = ""
    if any(row.flagged for row in rows):
        note = r" $^\dagger$ $\Delta \neq \Delta^{i\to c} - \Delta^{c\to i}$ as printed in the source."
    text = frame.style.hide(axis="index").to_latex(
        hrules=True, column_format="l" + "r" * (len(header) - 1), position="t", position_float="centering",
        caption=latex_escape(caption) + r". Accuracy in \%, 95\% paired bootstrap CI in brackets; "
                                        r"McNemar $p$: attempt 1 vs.\ attempt 2." + note,
        label=label)
    measured = sum(row.kind == "measured" for row in rows)
    if 0 < measured < len(rows):  # a rule between our numbers and the papers'
        lines = text.splitlines()
        start = lines.index(r"\midrule") + 1
        lines.insert(start + measured, r"\midrule")
        text = "\n".join(lines) + "\n"
    diagnosed = [row for row in rows if row.diagnostics is not None]
    if diagnosed:
        text += "\n" + _latex_diagnostics(diagnosed, label)
    return text


def _latex_diagnostics(rows: list[TableRow], label: str) -> str:
    import pandas as pd

    body = [[latex_escape(c.text(row)) if c.csv == "" else c.text(row).replace("-", "$-$") for c in DIAGNOSTICS]
            for row in rows]
    frame = pd.DataFrame(body, columns=[c.latex for c in DIAGNOSTICS])
    note = budget_note({row.label: row.tokens_per_problem for row in rows if row.tokens_per_problem is not None})
    caption = (r"Diagnostics and compute. Answer changed: \% of episodes whose final answer differs from attempt 1's; "
               r"median edit ratio between consecutive attempts (0 = copied); transition counts attempt 1 $\to$ 2; "
               r"$p$: exact McNemar test of Acc@t$_2$ against base; tokens and seconds per problem; "
               r"FLOPs $\approx 2N$ per token of a forward pass, $6N$ per token of a forward and backward pass "
               r"(training: whole sequences, prompts included).")
    if note:
        caption += " " + latex_escape(note)
    return frame.style.hide(axis="index").to_latex(
        hrules=True, column_format="l" + "r" * (len(DIAGNOSTICS) - 1), position="t", position_float="centering",
        caption=caption, label=f"{label}-diagnostics")
