"""Comparison plots (matplotlib, Agg, no pyplot state): accuracy per attempt, flips, edit ratios,
transitions, training curves.

Each figure is saved as PNG and PDF without timestamps or software stamps, so reruns give the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from harness.diagnostics import RowDiagnostics
from harness.metrics import Estimate, TurnMetrics
from harness.store import atomic_write_bytes

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
FORMATS = {"png": {"Software": None}, "pdf": {"CreationDate": None}}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, without pyplot's global state
    return fig


def save(fig, stem: Path) -> list[Path]:
    """Write `stem.png` and `stem.pdf` atomically; returns their paths."""
    written = []
    for fmt, metadata in FORMATS.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, metadata=metadata)
        written.append(atomic_write_bytes(stem.with_name(f"{stem.name}.{fmt}"), buffer.getvalue()))
    return written


def _top(highest: float) -> float:
    """The y-axis top for percentages: room above the highest error bar, at least 5, at most 105."""
    return min(105.0, max(5.0, highest * 1.15))


def _width(n_groups: int) -> float:
    return min(max(4.5, 1.3 * n_groups + 2.0), 14.0)


def _wrap(label: str, width: int = 16) -> str:
    """Long method labels on several short lines (no rotation, no overlap with the neighbours)."""
    import textwrap

    return "\n".join(textwrap.wrap(label, width, break_long_words=True, break_on_hyphens=True)) or label


def _height(labels: list[str], base: float = 3.6) -> float:
    return base + 0.17 * max((_wrap(s).count("\n") for s in labels), default=0)


def _set_labels(ax, labels: list[str]) -> None:
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels([_wrap(s) for s in labels])


def _bars(ax, labels: list[str], series: list[tuple[str, list[Estimate]]], ylabel: str) -> None:
    """Grouped bars with 95% CI error bars; `series` = (legend name, one estimate per label)."""
    width = 0.8 / len(series)
    top = 0.0
    for j, (name, estimates) in enumerate(series):
        x = np.arange(len(labels)) - 0.4 + width * (j + 0.5)
        values = np.array([e.value for e in estimates]) * 100
        low = np.array([e.low for e in estimates]) * 100
        high = np.array([e.high for e in estimates]) * 100
        ax.bar(x, values, width, label=name, color=COLORS[j % len(COLORS)],
               yerr=[values - low, high - values], capsize=3, ecolor="black", error_kw={"linewidth": 1})
        top = max(top, float(high.max(initial=0)))
    ax.set_ylim(0, _top(top))
    ax.set_ylabel(ylabel)
    ax.set_xlabel("Method")
    _set_labels(ax, labels)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def accuracy_plot(rows: dict[str, TurnMetrics], title: str, stem: Path) -> list[Path]:
    """Acc@t1 next to Acc@t2 for every method, with 95% CI error bars."""
    labels = list(rows)
    fig = _figure(_width(len(labels)) + 1.5, _height(labels))
    ax = fig.add_subplot()
    _bars(ax, labels, [(f"Attempt {k + 1}", [m.accuracy[k] for m in rows.values()]) for k in range(2)], "Accuracy (%)")
    ax.set_title(title, fontsize=10)
    return save(fig, stem)


def flips_plot(rows: dict[str, TurnMetrics], title: str, stem: Path) -> list[Path]:
    """Δi→c (fixed on attempt 2) and Δc→i (broken on attempt 2) for every method."""
    labels = list(rows)
    fig = _figure(_width(len(labels)) + 1.5, _height(labels))
    ax = fig.add_subplot()
    _bars(ax, labels, [("Δi→c (wrong → right)", [m.incorrect_to_correct for m in rows.values()]),
                       ("Δc→i (right → wrong)", [m.correct_to_incorrect for m in rows.values()])],
          "Share of all problems (%)")
    ax.set_title(title, fontsize=10)
    return save(fig, stem)


def attempts_plot(rows: dict[str, TurnMetrics], title: str, stem: Path) -> list[Path]:
    """Accuracy by attempt (K > 2), one line per method with 95% CI error bars."""
    fig = _figure(6.5, 3.8)
    ax = fig.add_subplot()
    for j, (label, m) in enumerate(rows.items()):
        x = np.arange(1, len(m.accuracy) + 1) + (j - (len(rows) - 1) / 2) * 0.04  # small dodge
        values = np.array([a.value for a in m.accuracy]) * 100
        err = [values - np.array([a.low for a in m.accuracy]) * 100, np.array([a.high for a in m.accuracy]) * 100 - values]
        ax.errorbar(x, values, yerr=err, marker="o", capsize=3, label=label, color=COLORS[j % len(COLORS)])
    turns = max(len(m.accuracy) for m in rows.values())
    highest = max(a.high for m in rows.values() for a in m.accuracy) * 100
    ax.set_xticks(range(1, turns + 1))
    ax.set_xlabel("Attempt")
    ax.set_ylabel("Accuracy (%)")
    ax.set_ylim(0, _top(highest))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title, fontsize=10)
    return save(fig, stem)


def edit_ratio_plot(rows: dict[str, RowDiagnostics], title: str, stem: Path) -> list[Path]:
    """SCoRe's figure: the histogram of edit ratios between consecutive attempts, one panel per method."""
    bins = np.linspace(0.0, 1.0, 21)
    fig = _figure(min(3.0 * len(rows) + 0.5, 14.0), 3.2)
    axes = fig.subplots(1, len(rows), squeeze=False, sharey=True)[0]
    for j, (ax, (label, d)) in enumerate(zip(axes, rows.items())):
        ratios = np.clip(np.asarray(d.edit_ratios, dtype=float), 0.0, 1.0)
        weights = np.full(len(ratios), 100.0 / max(len(ratios), 1))
        ax.hist(ratios, bins=bins, weights=weights, color=COLORS[j % len(COLORS)], edgecolor="white", linewidth=0.5)
        ax.axvline(d.median_edit_ratio, color="black", linestyle="--", linewidth=0.8,
                   label=f"median {d.median_edit_ratio:.3f}")
        ax.set_xlim(0, 1)
        ax.set_title(_wrap(label, 28), fontsize=9)
        ax.set_xlabel("Edit ratio, attempt k → k+1")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="upper right")
    axes[0].set_ylabel("Attempt pairs (%)")
    fig.suptitle(title, fontsize=10)
    return save(fig, stem)


def transitions_plot(rows: dict[str, RowDiagnostics], title: str, stem: Path) -> list[Path]:
    """Each method's problems split by verdict at attempt 1 → attempt 2, as stacked horizontal bars."""
    order = ("c→c", "i→c", "c→i", "i→i")  # harness.diagnostics.TRANSITIONS, right answers first
    colors = {"c→c": COLORS[2], "i→c": "#98df8a", "c→i": COLORS[3], "i→i": "#c7c7c7"}
    labels = list(rows)
    fig = _figure(7.5, 1.2 + 0.45 * len(labels) + 0.17 * max(_wrap(s).count("\n") for s in labels))
    ax = fig.add_subplot()
    y = np.arange(len(labels))[::-1]
    left = np.zeros(len(labels))
    for name in order:
        share = np.array([rows[label].transitions[name] / rows[label].n * 100 for label in labels])
        ax.barh(y, share, left=left, color=colors[name], label=name, edgecolor="white", linewidth=0.5)
        for yi, x0, width, label in zip(y, left, share, labels):
            if width >= 6:
                ax.text(x0 + width / 2, yi, str(rows[label].transitions[name]), ha="center", va="center", fontsize=7)
        left += share
    ax.set_yticks(y)
    ax.set_yticklabels([_wrap(s) for s in labels])
    ax.set_xlim(0, 100)
    ax.set_xlabel("Problems (%), by verdict at attempt 1 → attempt 2 (counts on the bars)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title, fontsize=10)
    return save(fig, stem)


SMOOTHING = 5  # steps in the trailing mean drawn over each training curve


def moving_average(values: list[float], window: int = SMOOTHING) -> list[float]:
    """The trailing mean of the last `window` values at each point (fewer at the start; NaNs skipped)."""
    out = []
    for i in range(len(values)):
        seen = [v for v in values[max(0, i - window + 1) : i + 1] if v == v]
        out.append(sum(seen) / len(seen) if seen else float("nan"))
    return out


def training_plot(log: list[dict[str, Any]], title: str, stem: Path) -> list[Path]:
    """A training run's curves from its log.jsonl: reward per attempt, Δ, and KL per attempt, each step
    faint and its trailing mean over SMOOTHING steps drawn over it (single steps are noisy: 16 episodes)."""
    steps = [r["step"] for r in log]
    kl_keys = [k for k in ("kl1", "kl2") if any(k in r for r in log)]
    panels = 3 if kl_keys else 2
    fig = _figure(4.0 * panels, 3.4)
    axes = fig.subplots(1, panels, squeeze=False)[0]

    def curve(ax, key: str, label: str, color: str, scale: float = 1.0) -> None:
        values = [r.get(key, float("nan")) * scale for r in log]
        ax.plot(steps, values, marker=".", color=color, alpha=0.35, linewidth=0.8)
        ax.plot(steps, moving_average(values), color=color, linewidth=1.8, label=label)

    curve(axes[0], "r1", "attempt 1 (r1)", COLORS[0], 100)
    curve(axes[0], "r2", "attempt 2 (r2)", COLORS[1], 100)
    axes[0].set_ylabel("Correct in training rollouts (%)")
    axes[0].set_ylim(-3, 103)
    axes[0].set_title("Reward per attempt", fontsize=10)
    curve(axes[1], "delta", "Δ = r2 − r1", COLORS[2], 100)
    axes[1].axhline(0, color="grey", linewidth=0.8)
    axes[1].set_ylabel("Δ reward (percentage points)")
    axes[1].set_title("Self-correction Δ", fontsize=10)
    if kl_keys:
        for index, key in enumerate(kl_keys):
            curve(axes[2], key, f"KL attempt {key[-1]}", COLORS[3 + index])
        axes[2].set_ylabel("KL(π ‖ π_ref), k3 estimate")
        axes[2].set_title("KL to the reference", fontsize=10)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(f"{title}  (faint: each step; bold: mean of the last {SMOOTHING} steps)", fontsize=11)
    return save(fig, stem)
