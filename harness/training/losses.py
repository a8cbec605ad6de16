"""Loss pieces shared by the RL methods, on [E] rewards and [E, T] per-token tensors.

Sequence terms are sums over an attempt's tokens divided by a constant `norm` (the token budget),
so long and short answers are weighed by their real log-probability, and means are over episodes.
"""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum(-1)


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(π || π_ref) at the sampled tokens: exp(r) - r - 1 with r = log π_ref - log π.
    Unbiased for the sequence KL under samples from π, and never negative."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, norm: float) -> torch.Tensor:
    return masked_sum(kl_per_token(logp, ref_logp), mask).mean() / norm


def reinforce(logp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, norm: float) -> torch.Tensor:
    """-E[A · log π(y)]: the REINFORCE surrogate; advantages carry no gradient."""
    return -(advantages.detach() * masked_sum(logp, mask)).mean() / norm


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor, norm: float) -> torch.Tensor:
    return masked_sum(entropy, mask).mean() / norm


def leave_one_out_baseline(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """For each episode, the mean reward of the OTHER samples of its problem (RLOO); an episode alone
    in its group falls back to the mean of the whole batch without it (0 for a batch of one)."""
    baseline = torch.empty_like(rewards)
    total, count = rewards.sum(), rewards.numel()
    for g in groups.unique():
        idx = groups == g
        n = int(idx.sum())
        if n > 1:
            baseline[idx] = (rewards[idx].sum() - rewards[idx]) / (n - 1)
        else:
            baseline[idx] = (total - rewards[idx]) / (count - 1) if count > 1 else 0.0
    return baseline


def batch_mean_baseline(rewards: torch.Tensor) -> torch.Tensor:
    return rewards.mean().expand_as(rewards)


def baseline_advantages(rewards: torch.Tensor, groups: torch.Tensor, baseline: str) -> torch.Tensor:
    """Reward minus a baseline: "loo" (leave-one-out within each group) or "batch_mean"."""
    if baseline == "loo":
        return rewards - leave_one_out_baseline(rewards, groups)
    return rewards - batch_mean_baseline(rewards)


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, scale_by_std: bool) -> torch.Tensor:
    """GRPO's advantage: reward minus its group's mean, optionally divided by the group's std."""
    adv = torch.empty_like(rewards)
    for g in groups.unique():
        idx = groups == g
        centred = rewards[idx] - rewards[idx].mean()
        adv[idx] = centred / (rewards[idx].std(unbiased=False) + 1e-4) if scale_by_std else centred
    return adv


def shaped_second_reward(r1: torch.Tensor, r2: torch.Tensor, alpha: float) -> torch.Tensor:
    """SCoRe's bonus: r̂(y2) = r(y2) + α · (r(y2) - r(y1)), rewarding the flip itself."""
    return r2 + alpha * (r2 - r1)


def td_targets(rewards: torch.Tensor, next_values: torch.Tensor, gamma: float) -> torch.Tensor:
    """r_t + γ · V(s_{t+1}) with V(s_{T+1}) = 0 supplied by the caller; no gradient through V."""
    return rewards + gamma * next_values.detach()
