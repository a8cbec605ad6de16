"""Self-correction metrics over an N x K correctness matrix (N problems, K attempts).

Definitions follow SCoRe (Kumar et al., 2024): Acc@tk is the fraction of problems correct at attempt
k; Δ(t1,t2) = Acc@t2 - Acc@t1; Δi→c (Δc→i) is the fraction of ALL N problems that were incorrect
(correct) at t1 and correct (incorrect) at t2, so Δ = Δi→c - Δc→i. Confidence intervals are 95%
paired percentile bootstraps over problems; McNemar's exact test compares t1 and t2 on the
discordant pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb
from typing import Any, Sequence

import numpy as np

from harness.sampling import numpy_rng

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class TurnMetrics:
    n: int
    accuracy: list[Estimate]  # Acc@t1 ... Acc@tK
    delta: Estimate  # Δ(t1, t2)
    incorrect_to_correct: Estimate  # Δi→c(t1, t2)
    correct_to_incorrect: Estimate  # Δc→i(t1, t2)
    mcnemar_p: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def statistics(correct: np.ndarray) -> np.ndarray:
    """[Acc@t1..Acc@tK, Δ, Δi→c, Δc→i] for an (N, K) or a stacked (B, N, K) boolean array."""
    acc = correct.mean(axis=-2)
    t1, t2 = correct[..., 0], correct[..., 1]
    i2c = (~t1 & t2).mean(axis=-1)
    c2i = (t1 & ~t2).mean(axis=-1)
    delta = acc[..., 1] - acc[..., 0]
    return np.concatenate([acc, np.stack([delta, i2c, c2i], axis=-1)], axis=-1)


def mcnemar_exact_p(incorrect_to_correct: int, correct_to_incorrect: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of the discordant pairs against p = 1/2."""
    n = incorrect_to_correct + correct_to_incorrect
    if n == 0:
        return 1.0
    k = min(incorrect_to_correct, correct_to_incorrect)
    tail = sum(comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def min_detectable_difference(n: int, discordant: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest difference of paired proportions δ = p10 - p01 that McNemar's test on n problems
    detects with the given power at two-sided level alpha, when a share `discordant` = p10 + p01 of the
    problems is answered differently by the two columns (normal approximation, Connor 1987):
    n = (z_{1-α/2} √ψ + z_{power} √(ψ - δ²))² / δ², solved for δ by bisection. 1.0 when no δ <= ψ is
    detectable (the test cannot move more problems than differ)."""
    from statistics import NormalDist

    z_alpha, z_power = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    psi = float(discordant)

    def needed(delta: float) -> float:
        return (z_alpha * psi ** 0.5 + z_power * max(psi - delta * delta, 0.0) ** 0.5) ** 2 / (delta * delta)

    if psi <= 0 or needed(psi) > n:
        return 1.0
    low, high = 1e-9, psi  # needed() falls as delta grows: the smallest delta with needed(delta) <= n
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if needed(mid) > n else (low, mid)
    return high


def self_correction_metrics(
    correct: Sequence[Sequence[bool]] | np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> TurnMetrics:
    matrix = np.asarray(correct, dtype=bool)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise ValueError(f"need an (N problems, K >= 2 attempts) matrix, got shape {matrix.shape}")
    n, k = matrix.shape
    if n == 0:
        raise ValueError("no problems to score")
    point = statistics(matrix)
    rng = numpy_rng(seed)
    # Paired bootstrap: resample problems, keeping each problem's K attempts together.
    draws = statistics(matrix[rng.integers(0, n, size=(resamples, n))])
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    est = [Estimate(float(p), float(lo), float(hi)) for p, lo, hi in zip(point, low, high)]
    t1, t2 = matrix[:, 0], matrix[:, 1]
    p_value = mcnemar_exact_p(int((~t1 & t2).sum()), int((t1 & ~t2).sum()))
    return TurnMetrics(n, est[:k], est[k], est[k + 1], est[k + 2], p_value)


def breakdown(
    correct: Sequence[Sequence[bool]] | np.ndarray,
    groups: Sequence[Any],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, TurnMetrics]:
    """Metrics per group value (MATH level, subject); problems with no group value are left out."""
    matrix = np.asarray(correct, dtype=bool)
    labels = np.asarray([str(g) if g is not None else "" for g in groups], dtype=object)
    return {
        str(value): self_correction_metrics(matrix[labels == value], resamples, seed)
        for value in sorted(set(labels) - {""}, key=_natural_key)
    }


def _natural_key(label: str) -> tuple[int, Any]:
    return (0, int(label)) if label.isdigit() else (1, label)


def score_episodes(episodes: Sequence[Any], turns: int,
                   breakdowns: bool = True) -> tuple[TurnMetrics, dict[str, Any]]:
    """The metrics of a run's episodes (harness.rollout.episode.Episode: their `correct`, `generated_tokens`
    and `item.meta`; in the problems' order: the bootstrap depends on it): the overall TurnMetrics and
    metrics.json's dict (overall, tokens per problem and, with `breakdowns`, by MATH level and subject
    when the problems carry them)."""
    if not episodes:
        from harness.errors import HarnessError

        raise HarnessError("no samples to score")
    correct = [e.correct[:turns] for e in episodes]
    overall = self_correction_metrics(correct)
    result: dict[str, Any] = {"overall": overall.to_dict(),
                              "tokens_per_problem": sum(e.generated_tokens for e in episodes) / len(episodes)}
    for key in ("level", "subject") if breakdowns else ():
        groups = [e.item.meta.get(key) for e in episodes]
        if any(g is not None for g in groups):
            result[f"by_{key}"] = {k: v.to_dict() for k, v in breakdown(correct, groups).items()}
    return overall, result
