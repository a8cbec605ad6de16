"""Rendering metrics for people: a rich table on the terminal (files arrive with `harness compare`)."""

from __future__ import annotations

from rich.table import Table

from harness.metrics import Estimate, TurnMetrics


def pct(est: Estimate, signed: bool = False) -> str:
    """The estimate in percent, its interval dimmed on a second line (keeps columns narrow)."""
    sign = "+" if signed else ""
    return f"{est.value * 100:{sign}.1f}\n[dim][{est.low * 100:{sign}.1f}, {est.high * 100:{sign}.1f}][/]"


def metrics_table(rows: dict[str, TurnMetrics], title: str = "Self-correction (%, 95% CI)") -> Table:
    first = next(iter(rows.values()))
    table = Table(title=title)
    table.add_column("method", min_width=8)
    for k in range(len(first.accuracy)):
        table.add_column(f"Acc@t{k + 1}", justify="right", no_wrap=True)
    for name in ("Δ(t1,t2)", "Δi→c", "Δc→i", "n", "McNemar p"):
        table.add_column(name, justify="right", no_wrap=True)
    for label, m in rows.items():
        table.add_row(label, *(pct(a) for a in m.accuracy), pct(m.delta, signed=True), pct(m.incorrect_to_correct),
                      pct(m.correct_to_incorrect), str(m.n), f"{m.mcnemar_p:.3g}")
    return table


def diagnostics_table(rows: list, title: str = "Diagnostics and compute (per problem)") -> Table:
    """The measured rows' diagnostics (harness.tables.TableRow with diagnostics), as in table.md."""
    from harness.tables import DIAGNOSTICS

    short = {"Answer changed %": "changed %", "Median edit ratio": "edit", "p vs base (Acc@t2)": "p base",
             "Gen. tokens/problem": "gen.", "Prefill tokens/problem": "prefill", "Seconds/problem": "s",
             "Inference FLOPs": "FLOPs", "Training FLOPs": "train FLOPs"}
    shown = [c for c in DIAGNOSTICS if c.csv != "parameters"]  # N is in the files; the terminal is narrower
    table = Table(title=title)
    for column in shown:
        table.add_column(short.get(column.markdown, column.markdown), justify="left" if column.csv == "" else "right",
                         no_wrap=column.csv != "", min_width=8 if column.csv == "" else None)
    for row in rows:
        if row.diagnostics is not None:
            table.add_row(*(column.text(row) for column in shown))
    return table
