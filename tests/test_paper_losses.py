"""Each trained method's loss (or dataset) on 4-8 hand-made episodes, against the paper's formula worked
out by hand in the comments: SCoRe (Kumar et al., 2024, Eq. 3-5), A2C (both stages), RRR (GRPO on the
reflection), Pair-SFT's pairs and STaR's D+ filter. Numbers are chosen so every term matters; nothing
here calls the code under test to get an expected value."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from harness.rollout.episode import Episode, Step
from harness.task import Grade, Item
from harness.training.objective import RLBatch
from harness.training.sft import SFTExample, SFTSchedule
from methods.a2c2stage import A2COptions, a2c_loss, advantages_and_targets, shaped_rewards, unshaped_value
from methods.pair_sft import make_pairs
from methods.rrr import REFLECTION, RRROptions, rrr_loss
from methods.score import ScoreOptions, score_loss
from methods.star import d_plus

LOG2 = math.log(2)


def _batch(rewards, logp, ref, masks, groups, entropy=None) -> RLBatch:
    seq = type("Seq", (), {"action_masks": masks})()
    return RLBatch(0, [], seq, torch.tensor(rewards, dtype=torch.float32), torch.tensor(groups), logp, ref,
                   entropy, 1.0)


def _two_attempts(lp1, lp2):
    """[2, E, 2] log-probs and masks: token 0 is attempt 1, token 1 attempt 2 (one token each)."""
    e = len(lp1)
    masks = torch.zeros(2, e, 2)
    masks[0, :, 0], masks[1, :, 1] = 1.0, 1.0
    logp = torch.zeros(2, e, 2)
    logp[0, :, 0], logp[1, :, 1] = torch.tensor(lp1), torch.tensor(lp2)
    return logp, masks


# Four episodes, two problems of two samples each (groups 0, 0, 1, 1).
R1, R2 = [0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]
LP1, LP2 = [-1.0, -2.0, -0.5, -3.0], [-2.0, -1.0, -1.0, -3.0]
GROUPS = [0, 0, 1, 1]


def _score_batch(ref_shift1: float = 0.0):
    logp, masks = _two_attempts(LP1, LP2)
    ref = logp.clone()
    ref[0, :, 0] -= ref_shift1  # π_ref(y1) = π(y1) / 2 when the shift is log 2
    return _batch([R1, R2], logp.requires_grad_(True), ref, masks, GROUPS)


def test_score_stage_two_loss_by_hand():
    # Eq. 4-5: r̂2 = r2 + α (r2 - r1), α = 10: [1+10, 0-10, 1+0, 0+0] = [11, -10, 1, 0].
    # Leave-one-out baselines within a problem: A1 = r1 - other's r1 = [-1, 1, 1, -1];
    # A2 = r̂2 - other's r̂2 = [21, -21, 1, -1].
    # Σ A1 lp1 = 1 - 2 - 0.5 + 3 = 1.5; Σ A2 lp2 = -42 + 21 - 1 + 3 = -19; loss = -(1.5 - 19) / 4 = 4.375.
    out = score_loss(_score_batch(), ScoreOptions(alpha=10.0, beta1=0.01, beta2=0.1), stage=2)
    assert out.loss.item() == pytest.approx(4.375)
    assert out.logs["kl1"] == 0.0 and out.logs["kl2"] == 0.0


@pytest.mark.parametrize("estimator, kl_value, dkl_dlogp, dkl_dlogp_equal", [
    ("k3", LOG2 - 0.5, 0.5, 0.0),  # exp(-log 2) + log 2 - 1; d/dlogp = 1 - π_ref/π: 1/2, and 0 where π = π_ref
    ("k1", LOG2, 1.0, 1.0),  # log π - log π_ref = log 2; d/dlogp = 1 everywhere, even where its value is 0
])
def test_score_stage_one_by_hand_and_attempt_one_only_under_kl(estimator, kl_value, dkl_dlogp, dkl_dlogp_equal):
    # Stage I (Eq. 3): maximise r2 only: A2 = r2 - other's r2 = [1, -1, 1, -1];
    # Σ A2 lp2 = -2 + 1 - 1 + 3 = 1 -> policy gradient -1/4. Attempt 1 is held by β2 KL(attempt 1):
    # π_ref(y1) = π(y1)/2 for every episode, so the per-episode KL is `kl_value`; attempt 2 has none.
    batch = _score_batch(ref_shift1=LOG2)
    opts = ScoreOptions(alpha=10.0, beta1=0.01, beta2=0.1, kl_estimator=estimator)
    out = score_loss(batch, opts, stage=1)
    assert out.loss.item() == pytest.approx(-0.25 + 0.1 * kl_value)
    out.loss.backward()
    # Attempt 1's gradient is the KL term's alone: β2 · dKL/dlogp / E.
    assert batch.logp.grad[0, :, 0].tolist() == pytest.approx([0.1 * dkl_dlogp / 4] * 4)
    # Attempt 2's is the policy gradient's, -A2 / E, plus β1 · dKL/dlogp / E at π = π_ref.
    weak = 0.01 * dkl_dlogp_equal / 4
    assert batch.logp.grad[1, :, 1].tolist() == pytest.approx([-0.25 + weak, 0.25 + weak, -0.25 + weak, 0.25 + weak])


# ---- A2C ------------------------------------------------------------------------------------------

V1, V2 = [0.5, 0.5, 0.5, 0.5], [0.2, 0.8, 0.6, 0.1]


def _a2c(stage: int, opts: A2COptions, entropy=None):
    r2 = [1.0, 1.0, 0.0, 0.0]
    logp, masks = _two_attempts(LP1, LP2)
    logp.requires_grad_(True)
    values = torch.tensor([V1, V2], requires_grad=True)
    entropy = torch.zeros(2, 4, 2) if entropy is None else entropy  # the trainer always gives A2C entropies
    batch = _batch([R1, r2], logp, logp.detach().clone(), masks, [0, 1, 2, 3], entropy)
    return a2c_loss(batch, values, opts, stage), batch, values


def test_a2c_stage_two_loss_by_hand():
    # r1 = [0, 1, 1, 0], r2 = [1, 1, 0, 0], α = 2: r2' = [1+2, 1+0, 0-2, 0] = [3, 1, -2, 0].
    # γ = 0 (the default): A1 = r1 - V(s1) = [-0.5, 0.5, 0.5, -0.5]; A2 = r2' - V(s2) = [2.8, 0.2, -2.6, -0.1].
    # actor = -(Σ A1 lp1 + Σ A2 lp2) / 4 = -(0.75 - 2.9) / 4 = 0.5375.
    # critic = mean over episodes of (A1² + A2²) = (1.0 + 14.65) / 4 = 3.9125.
    out, _, _ = _a2c(2, A2COptions(alpha=2.0, beta1=0.0, beta2=0.0, entropy_coef=0.0))
    assert A2COptions().gamma == 0.0
    assert out.logs["actor_loss"] == pytest.approx(0.5375)
    assert out.logs["critic_loss"] == pytest.approx(3.9125)
    assert out.loss.item() == pytest.approx(0.5375 + 3.9125)


def test_a2c_stage_one_loss_by_hand_trains_attempt_two_only():
    # Stage I: r1 := 0, r2 unshaped. A2 = r2 - V(s2) = [0.8, 0.2, -0.6, -0.1];
    # actor = -Σ A2 lp2 / 4 = -(-1.6 - 0.2 + 0.6 + 0.3) / 4 = 0.225. Entropy (c = 0.5) on attempt 2 only:
    # H2 = [1, 2, 3, 4] -> -0.5 · 10 / 4 = -1.25. Critic: (0 - 0.5)² · 4 + (0.64 + 0.04 + 0.36 + 0.01) = 2.05 -> /4.
    entropy = torch.zeros(2, 4, 2)
    entropy[0, :, 0] = torch.tensor([9.0, 9.0, 9.0, 9.0])  # attempt 1's: must not count in stage I
    entropy[1, :, 1] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    entropy.requires_grad_(True)
    out, batch, _ = _a2c(1, A2COptions(alpha=2.0, beta1=0.0, beta2=0.0, entropy_coef=0.5), entropy)
    assert out.logs["actor_loss"] == pytest.approx(0.225)
    assert out.logs["entropy"] == pytest.approx(10 / 4)
    assert out.logs["loss"] == pytest.approx(0.225 - 1.25)
    assert out.logs["critic_loss"] == pytest.approx(2.05 / 4)
    out.loss.backward()
    # Item 2 of the fidelity issue: in stage I attempt 1's policy-gradient (and entropy) term is exactly zero.
    assert torch.count_nonzero(batch.logp.grad[0]) == 0
    assert torch.count_nonzero(entropy.grad[0]) == 0
    assert batch.logp.grad[1, :, 1].tolist() == pytest.approx([-0.2, -0.05, 0.15, 0.025])  # -A2 / 4


def test_a2c_stage_one_gives_attempt_one_the_kl_term_and_nothing_else():
    # β1 = 0.2, π_ref(y1) = π(y1)/2: attempt 1's gradient is β1 · (1 - 1/2) / 4 per episode (k3), whatever
    # its advantage; attempt 2 has no KL in stage I.
    logp, masks = _two_attempts(LP1, LP2)
    logp.requires_grad_(True)
    ref = logp.detach().clone()
    ref[0, :, 0] -= LOG2
    batch = _batch([R1, [1.0, 1.0, 0.0, 0.0]], logp, ref, masks, [0, 1, 2, 3], torch.zeros(2, 4, 2))
    values = torch.tensor([V1, V2])
    a2c_loss(batch, values, A2COptions(alpha=2.0, beta1=0.2, entropy_coef=0.0), 1).loss.backward()
    assert batch.logp.grad[0, :, 0].tolist() == pytest.approx([0.2 * 0.5 / 4] * 4)
    # Stage II trains attempt 1 too (here with β2 = 0: the gradient is -A1 / 4 = [0.125, -0.125, -0.125, 0.125]).
    logp.grad = None
    a2c_loss(batch, values, A2COptions(alpha=2.0, beta2=0.0, entropy_coef=0.0), 2).loss.backward()
    assert batch.logp.grad[0, :, 0].tolist() == pytest.approx([0.125, -0.125, -0.125, 0.125])


def _fixed_point_advantage1(r1: float, r2: float, opts: A2COptions, v1: float, bootstrap_unshaped: bool = True):
    """Attempt 1's stage II advantage with the critic at its targets: V(s2) = the target it is trained
    towards for this (r1, r2) (it carries whatever reward reaches s2), V(s1) = v1, one state for both r1."""
    rewards = shaped_rewards(torch.tensor([r1]), torch.tensor([r2]), 2, opts.alpha)
    values = torch.tensor([[v1], [0.0]])
    for _ in range(3):  # V(s2)'s target does not depend on V(s2): one pass reaches it, three make sure
        boot = unshaped_value(values[1], torch.tensor([r1]), 2, opts.alpha) if bootstrap_unshaped else None
        _, targets = advantages_and_targets(rewards, values, opts.gamma, boot)
        values = torch.stack([values[0], targets[1]])
    boot = unshaped_value(values[1], torch.tensor([r1]), 2, opts.alpha) if bootstrap_unshaped else None
    adv, _ = advantages_and_targets(rewards, values, opts.gamma, boot)
    assert values[1].item() == pytest.approx(r2 + opts.alpha * (r2 - r1))  # V(s2) holds the shaped r2
    return adv[0].item()


@pytest.mark.parametrize("gamma", [None, 0.5, 1.0])  # None: the default options
@pytest.mark.parametrize("r2", [0.0, 1.0])
def test_a2c_a_right_first_attempt_is_never_credited_below_a_wrong_one(r2, gamma):
    opts = A2COptions() if gamma is None else A2COptions(gamma=gamma)
    for v1 in (0.0, 0.5, 1.0):
        assert _fixed_point_advantage1(1.0, r2, opts, v1) >= _fixed_point_advantage1(0.0, r2, opts, v1)


def test_a2c_bootstrapping_on_the_shaped_value_would_pay_for_failing_first():
    # Why the bootstrap is unshaped: with γ = 1, α = 2 and V(s2) = r2', attempt 1's credit would be
    # r1 + r2' - V(s1): wrong-then-right 0 + 3 = 3 beats right-then-right 1 + 1 = 2.
    opts = A2COptions(gamma=1.0, alpha=2.0)
    assert _fixed_point_advantage1(0.0, 1.0, opts, 0.5, bootstrap_unshaped=False) == pytest.approx(3 - 0.5)
    assert _fixed_point_advantage1(1.0, 1.0, opts, 0.5, bootstrap_unshaped=False) == pytest.approx(2 - 0.5)
    # ... and with the unshaped bootstrap: r1 + r2 - V(s1), i.e. 1 - 0.5 and 2 - 0.5.
    assert _fixed_point_advantage1(0.0, 1.0, opts, 0.5) == pytest.approx(0.5)
    assert _fixed_point_advantage1(1.0, 1.0, opts, 0.5) == pytest.approx(1.5)


# ---- RRR ------------------------------------------------------------------------------------------

def test_rrr_loss_by_hand():
    # Two failed first attempts, G = 3 reflections each; retry rewards [1, 0, 0] and [1, 1, 0].
    # GRPO advantage = reward - group mean: [2/3, -1/3, -1/3] and [1/3, 1/3, -2/3].
    # Reflection log-probs (one token each) [-1, -2, -3, -1, -1, -4]:
    # Σ A·lp = -2/3 + 2/3 + 1 - 1/3 - 1/3 + 8/3 = 3; loss = -3 / 6 = -0.5. Attempts get no gradient.
    e = 6
    masks = torch.zeros(3, e, 3)  # steps: attempt 1, reflection, attempt 2 (one token each)
    for k in range(3):
        masks[k, :, k] = 1.0
    logp = torch.full((3, e, 3), -0.7)
    logp[REFLECTION, :, REFLECTION] = torch.tensor([-1.0, -2.0, -3.0, -1.0, -1.0, -4.0])
    logp = (logp * masks).requires_grad_(True)
    batch = _batch([[0.0] * e, [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]], logp, logp.detach().clone(), masks,
                   [0, 0, 0, 3, 3, 3])
    out = rrr_loss(batch, RRROptions(group_size=3, beta=0.1))
    assert out.loss.item() == pytest.approx(-0.5)
    out.loss.backward()
    assert torch.count_nonzero(logp.grad[0]) == 0 and torch.count_nonzero(logp.grad[2]) == 0
    assert logp.grad[REFLECTION, :, REFLECTION].tolist() == pytest.approx(
        [-2 / 18, 1 / 18, 1 / 18, -1 / 18, -1 / 18, 2 / 18])


# ---- Pair-SFT and STaR data -------------------------------------------------------------------------

def _step(text: str, correct: bool, turn: int, carried: bool = False) -> Step:
    messages = [{"role": "user", "content": "q"}] + ([{"role": "assistant", "content": "y1"},
                                                      {"role": "user", "content": "fix"}] if turn == 2 else [])
    return Step("attempt", messages, text, 3, 1, True, 0.0, Grade(correct, text, ""), carried,
                prompt_ids=(1, 2, 3), token_ids=(7,))


def _episode(problem: str, *steps: Step) -> Episode:
    return Episode(Item(problem, "q", "a"), list(steps))


def _pair_sft_episodes():
    return [
        # p1: right only in a second turn: every wrong response (b's turn 2 too) pairs with a2.
        _episode("p1", _step("a1", False, 1), _step("a2", True, 2)),
        _episode("p1", _step("b1", False, 1), _step("b2", False, 2)),
        # p2: three right responses over both turns; one wrong one.
        _episode("p2", _step("c1", True, 1), _step("c2", True, 2)),
        _episode("p2", _step("d1", False, 1), _step("d2", True, 2)),
        # p3: nothing right: no pair. p4: a carried copy is not a response of its own.
        _episode("p3", _step("e1", False, 1), _step("e2", False, 2)),
        _episode("p4", _step("f1", True, 1), replace(_step("f1", True, 1), carried=True)),
        _episode("p4", _step("g1", False, 1), _step("g2", False, 2)),
    ]


def test_pair_sft_pairs_every_wrong_response_of_both_turns_with_a_right_one_of_either_turn():
    pairs = make_pairs(_pair_sft_episodes(), seed=0)
    found = sorted((w.text, r.text) for _, w, r in pairs if _.item.id != "p2")
    # p1: a1, b1, b2 -> a2 (a second-turn right response); p4: g1, g2 -> f1 (its carried copy is no partner).
    assert found == [("a1", "a2"), ("b1", "a2"), ("b2", "a2"), ("g1", "f1"), ("g2", "f1")]
    (p2,) = [(w.text, r.text) for e, w, r in pairs if e.item.id == "p2"]
    assert p2[0] == "d1" and p2[1] in {"c1", "c2", "d2"}
    assert len(pairs) == 6
    # The partner is drawn at random with the run's seed: the same seed, the same pairs; over seeds,
    # each of p2's three right responses (both turns) is drawn.
    assert [(w.text, r.text) for _, w, r in make_pairs(_pair_sft_episodes(), seed=0)] == \
        [(w.text, r.text) for _, w, r in pairs]
    drawn = {next(r.text for e, _, r in make_pairs(_pair_sft_episodes(), seed=s) if e.item.id == "p2")
             for s in range(40)}
    assert drawn == {"c1", "c2", "d2"}


def test_pair_sft_trains_exactly_one_epoch_over_its_pairs(tmp_path):
    # 10 pairs, 4 per step: ceil(10 / 4) = 3 steps; each pair in exactly one of them, no wrap-around.
    schedule = SFTSchedule(1, 100, 0, 0, tmp_path, epochs=1)
    examples = [SFTExample(f"p{i}", [i], [(0, 1)]) for i in range(10)]
    assert schedule.epoch_steps(len(examples), 4) == 3
    batches = [schedule.batch(step, examples, 4) for step in range(3)]
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(e.problem_id for b in batches for e in b) == sorted(e.problem_id for e in examples)
    assert schedule.batch(3, examples, 4) == []
    assert SFTSchedule(1, 100, 0, 0, tmp_path, epochs=2).epoch_steps(10, 4) == 5  # two passes: 20 / 4


def test_star_keeps_the_traces_whose_second_attempt_is_right():
    # D+ (STaR's filter, multi-turn): i->c and c->c are kept; c->i and i->i are not.
    episodes = [_episode("p", _step("1", a, 1), _step("2", b, 2))
                for a, b in [(False, True), (True, True), (True, False), (False, False)]]
    assert [(e.correct[0], e.correct[1]) for e in d_plus(episodes)] == [(False, True), (True, True)]
