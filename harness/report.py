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
