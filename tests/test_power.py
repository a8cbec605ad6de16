"""The power figure the real-model study states before looking: the smallest paired difference
McNemar's test detects at alpha 0.05 with power 0.8, checked by hand and by simulating the test; and the
README's study section quoting the committed comparison."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.metrics import mcnemar_exact_p, min_detectable_difference


def test_matches_the_hand_computed_sample_size():
    # psi = 0.3, delta = 0.1: n = (1.95996 * sqrt(0.3) + 0.84162 * sqrt(0.29))^2 / 0.01 = 233.1
    delta = min_detectable_difference(234, 0.3)
    assert 0.095 < delta < 0.1
    assert min_detectable_difference(233, 0.3) > 0.1  # 233 < 233.1 problems: 0.1 is just out of reach
    assert min_detectable_difference(936, 0.3) == pytest.approx(delta / 2, rel=0.03)  # ~1/sqrt(n)
    assert min_detectable_difference(200, 0.0) == 1.0  # nothing differs: nothing to detect
    assert min_detectable_difference(5, 0.2) == 1.0  # too few problems for any difference


def test_the_exact_test_reaches_about_the_stated_power():
    n, psi = 234, 0.3
    delta = min_detectable_difference(n, psi)
    rng = np.random.default_rng(0)
    cells = rng.multinomial(n, [(psi + delta) / 2, (psi - delta) / 2, 1 - psi], size=2000)
    power = np.mean([mcnemar_exact_p(int(a), int(b)) < 0.05 for a, b, _ in cells])
    # the normal approximation for the exact (slightly conservative) test: within a few points of 0.8
    assert 0.72 < power < 0.86, power


def test_readme_quotes_the_committed_study_and_its_measured_reach():
    """The README's study table and its ~5-point reach are the committed comparison's, not a stale copy."""
    root = Path(__file__).resolve().parents[1]
    folder = root / "results" / "reference" / "study-gsm8k" / "compare"
    readme = root.joinpath("README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### The first trained result"):readme.index("**How the study was set up")]
    rows = json.loads((folder / "compare.json").read_text())["rows"]
    assert len(rows) == 6
    for row in rows:
        cells = [f"{100 * a['value']:.1f} [{100 * a['low']:.1f}, {100 * a['high']:.1f}]"
                 for a in row["metrics"]["accuracy"]]
        line = next(ln for ln in section.splitlines() if ln.startswith(f"| {row['label'].split(' (')[0]} "))
        assert all(c.replace("-", "−") in line.replace("*", "") for c in cells), (line, cells)
    # the reach quoted for STaR, SCoRe and A2C: from their disagreement with base's attempt-2 verdicts
    episodes = pd.read_csv(folder / "episodes.csv")
    right = episodes.assign(ok=episodes.transition.str[-1].eq("c")).pivot(index="id", columns="method", values="ok")
    reach = {m: 100 * min_detectable_difference(len(right), float((right[m] != right["base"]).mean()))
             for m in right.columns if m.split(" ")[0] in ("star", "score", "a2c2stage")}
    assert len(reach) == 3 and all(4.5 < r < 5.5 for r in reach.values()), reach
    for value in reach.values():
        assert re.search(rf"\b{value:.1f}\b", section), value
