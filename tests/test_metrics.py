"""Metrics against numbers computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from harness.metrics import breakdown, mcnemar_exact_p, self_correction_metrics

# 10 problems, 2 attempts. t1 correct: 1,2,3,4,5,6 -> 0.6. t2 correct: 1,2,3,4,7,8,9 -> 0.7.
# i->c: problems 7,8,9 (3/10); c->i: problems 5,6 (2/10); delta = 0.1 = 0.3 - 0.2.
HAND = [[1, 1], [1, 1], [1, 1], [1, 1], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [0, 0]]


def test_point_estimates_match_hand_computation():
    m = self_correction_metrics(HAND)
    assert m.n == 10
    assert [a.value for a in m.accuracy] == pytest.approx([0.6, 0.7])
    assert m.delta.value == pytest.approx(0.1)
    assert m.incorrect_to_correct.value == pytest.approx(0.3)
    assert m.correct_to_incorrect.value == pytest.approx(0.2)
    # McNemar exact: b=3, c=2, n=5 -> 2 * P(X <= 2 | Bin(5, 1/2)) = 2 * (1+5+10)/32 = 1.0
    assert m.mcnemar_p == pytest.approx(1.0)


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(8, 0) == pytest.approx(2 / 256)  # 2 * (1/2)^8
    assert mcnemar_exact_p(9, 1) == pytest.approx(2 * 11 / 1024)  # 2 * (C(10,0)+C(10,1)) / 2^10
    assert mcnemar_exact_p(1, 9) == mcnemar_exact_p(9, 1)


def test_three_attempts_give_three_accuracies():
    m = self_correction_metrics([[0, 1, 1], [0, 0, 1], [1, 1, 1], [1, 0, 0]])
    assert [a.value for a in m.accuracy] == pytest.approx([0.5, 0.5, 0.75])


def test_bootstrap_intervals_bracket_the_estimate_and_are_reproducible():
    rng = np.random.default_rng(1)
    matrix = rng.random((200, 2)) < [0.5, 0.6]
    a, b = self_correction_metrics(matrix), self_correction_metrics(matrix)
    assert a == b  # fixed seed
    for est in [*a.accuracy, a.delta, a.incorrect_to_correct, a.correct_to_incorrect]:
        assert est.low <= est.value <= est.high
        assert est.high - est.low < 0.25  # n=200: a 95% interval on a proportion is about +-0.07
    # Binomial standard error for Acc@t1 is ~0.035; the percentile interval is ~ +-1.96 SE.
    width = a.accuracy[0].high - a.accuracy[0].low
    assert 0.10 < width < 0.17


def test_perfect_agreement_has_zero_width_delta():
    m = self_correction_metrics([[1, 1]] * 5 + [[0, 0]] * 5)
    assert (m.delta.low, m.delta.value, m.delta.high) == (0.0, 0.0, 0.0)


def test_breakdown_by_level_groups_problems():
    groups = [1, 1, 1, 1, 2, 2, 2, 2, None, None]
    parts = breakdown(HAND, groups)
    assert list(parts) == ["1", "2"]
    assert [a.value for a in parts["1"].accuracy] == [1.0, 1.0]
    # Level 2 holds [1,0],[1,0],[0,1],[0,1]: both attempts 0.5, with 2 flips each way.
    assert [a.value for a in parts["2"].accuracy] == [0.5, 0.5]
    assert (parts["2"].incorrect_to_correct.value, parts["2"].correct_to_incorrect.value) == (0.5, 0.5)


def test_rejects_single_attempt_and_empty():
    with pytest.raises(ValueError):
        self_correction_metrics([[1], [0]])
    with pytest.raises(ValueError):
        self_correction_metrics(np.zeros((0, 2), dtype=bool))
