"""Each loss term on hand-made tensors against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from harness.training.losses import (kl_per_token, kl_penalty, leave_one_out_baseline, reinforce,
                                     shaped_second_reward, td_targets)
from harness.training.objective import RLBatch
from methods.a2c2stage import A2COptions, a2c_loss, advantages_and_targets, shaped_rewards
from methods.score import ScoreOptions, score_loss


def test_reinforce_with_baseline_value_and_gradient():
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    loss = reinforce(logp, mask, adv, norm=2.0)
    # sequence log-probs: -3 and -0.5; -(1*(-3) + (-2)*(-0.5)) / 2 episodes / norm 2 = 0.5
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    # d/dlogp[e,t] = -A_e * mask / (E * norm): -1/4 on episode 0's tokens, +2/4 on episode 1's token
    assert logp.grad.flatten().tolist() == pytest.approx([-0.25, -0.25, 0.0, 0.5, 0.0, 0.0])


def test_leave_one_out_baseline():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    # group 0: others' means (0+1)/2, (1+1)/2, (1+0)/2; group 1: 0, 1; episode 5 alone: mean of the other 5 = 3/5
    assert leave_one_out_baseline(rewards, groups).tolist() == pytest.approx([0.5, 1.0, 0.5, 0.0, 1.0, 0.6])


@pytest.mark.parametrize("r1, r2, expected", [(0, 0, 0.0), (0, 1, 11.0), (1, 0, -10.0), (1, 1, 1.0)])
def test_score_reward_bonus_in_all_four_cases(r1, r2, expected):
    assert shaped_second_reward(torch.tensor(float(r1)), torch.tensor(float(r2)), alpha=10.0).item() == expected


def test_kl_k3_estimator_by_hand():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    # r = log(0.25 / 0.5) = -log 2: exp(r) - r - 1 = 0.5 + log 2 - 1
    assert kl_per_token(logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)
    assert kl_per_token(ref, ref).item() == 0.0
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    lp = torch.full((2, 2), math.log(0.5))
    rf = torch.full((2, 2), math.log(0.25))
    per = 0.5 + math.log(2) - 1
    assert kl_penalty(lp, rf, mask, norm=4.0).item() == pytest.approx((2 * per + per) / 2 / 4)


def _batch(r1, r2, lp, ref, masks, entropy=None, step=0):
    k, e, t = masks.shape
    seq = type("Seq", (), {"action_masks": masks})()
    return RLBatch(step, [], seq, torch.tensor([r1, r2], dtype=torch.float32), torch.arange(e), lp, ref, entropy, 1.0)


def test_score_stages_by_hand():
    masks = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # one episode: token 0 is y1, token 1 is y2
    lp = torch.tensor([[[-1.0, 0.0]], [[0.0, -2.0]]])
    ref = lp.clone()  # no drift: KL terms are zero
    opts = ScoreOptions(alpha=10.0, baseline="batch_mean")
    # One episode, batch-mean baseline: every advantage is 0, so only KL (0) remains.
    assert score_loss(_batch([0.0], [1.0], lp, ref, masks), opts, 1).loss.item() == 0.0
    # Two problems, one sample each. Stage I uses r2 only; stage II r1 and the shaped r2.
    masks2 = masks.repeat(1, 2, 1)
    lp2 = torch.tensor([[[-1.0, 0.0], [-3.0, 0.0]], [[0.0, -2.0], [0.0, -4.0]]])
    batch = _batch([0.0, 1.0], [1.0, 1.0], lp2, lp2.clone(), masks2)
    # stage I: r2 = [1, 1] -> advantages 0 -> loss 0
    assert score_loss(batch, opts, 1).loss.item() == pytest.approx(0.0)
    # stage II: r1 = [0, 1] -> A1 = [-0.5, 0.5]; shaped r2 = [11, 1] -> A2 = [5, -5]
    # loss = -mean(A1 * [-1, -3]) - mean(A2 * [-2, -4]) = -(0.5 - 1.5)/2 - (-10 + 20)/2 = 0.5 - 5 = -4.5
    assert score_loss(batch, opts, 2).loss.item() == pytest.approx(-4.5)


def test_a2c_advantages_and_critic_targets_for_two_steps():
    rewards = torch.tensor([[0.0], [1.0]])
    values = torch.tensor([[0.3], [0.6]])
    adv, targets = advantages_and_targets(rewards, values, gamma=1.0)
    # A1 = r1 + V(s2) - V(s1) = 0.3; A2 = r2 + 0 - V(s2) = 0.4; targets 0.6 and 1
    assert adv.flatten().tolist() == pytest.approx([0.3, 0.4])
    assert targets.flatten().tolist() == pytest.approx([0.6, 1.0])
    adv_half, _ = advantages_and_targets(rewards, values, gamma=0.5)
    assert adv_half.flatten().tolist() == pytest.approx([0.0, 0.4])  # 0 + 0.5*0.6 - 0.3
    assert td_targets(torch.tensor([1.0]), torch.tensor([2.0]), 0.9).item() == pytest.approx(2.8)


def test_a2c_stage_rewards():
    r1, r2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert shaped_rewards(r1, r2, 1, alpha=2.0).tolist() == [[0.0, 0.0], [0.0, 1.0]]  # stage I: r1 := 0
    assert shaped_rewards(r1, r2, 2, alpha=2.0).tolist() == [[1.0, 0.0], [-2.0, 3.0]]  # r2 + 2 (r2 - r1)


def test_a2c_loss_with_entropy_and_critic_by_hand():
    masks = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    lp = torch.tensor([[[-1.0, 0.0]], [[0.0, -2.0]]])
    entropy = torch.tensor([[[0.5, 0.0]], [[0.0, 1.5]]])
    values = torch.tensor([[0.3], [0.6]], requires_grad=True)
    opts = A2COptions(alpha=2.0, beta1=0.0, beta2=0.0, gamma=1.0, entropy_coef=0.1)
    out = a2c_loss(_batch([0.0], [1.0], lp, lp.clone(), masks, entropy), values, opts, stage=2)
    # stage II, r1 = 0, r2 = 1: r2' = 1 + 2 (1 - 0) = 3. γ = 1: attempt 1 bootstraps on the value of the
    # unshaped r2, (V(s2) + α r1) / (1 + α) = 0.6 / 3 = 0.2: A1 = 0 + 0.2 - 0.3 = -0.1; A2 = 3 - 0.6 = 2.4.
    # actor: -(-0.1 * -1) - (2.4 * -2) = 4.7; entropy (0.5 + 1.5) * 0.1 = 0.2 -> actor loss 4.5
    assert out.logs["loss"] == pytest.approx(4.5)
    assert out.logs["critic_loss"] == pytest.approx(0.01 + 5.76)  # (0.2 - 0.3)^2 + (3 - 0.6)^2
    assert out.loss.item() == pytest.approx(4.5 + 5.77)  # one backward trains actor and critic
    out.loss.backward()  # the log-probs carry no gradient here: only the critic's term reaches the values
    # d/dV1 = -2 (0.2 - 0.3) = 0.2; d/dV2 = -2 (3 - 0.6) = -4.8 (the target's V(s2) is detached)
    assert values.grad.flatten().tolist() == pytest.approx([0.2, -4.8])
