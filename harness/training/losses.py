"""Loss pieces shared by the RL methods, on [E] rewards and [E, T] per-token tensors.

Sequence terms are sums over an attempt's tokens divided by a constant `norm` (the token budget),
so long and short answers are weighed by their real log-probability, and means are over episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.config import setting

KL_ESTIMATORS = ("k3", "k1")
# Truncated importance sampling (TIS) of rollouts from an engine with its own weights (vLLM in bf16,
# llama.cpp on quantized weights): a sampled token's policy-gradient term is weighed by
# min(π_trainer / π_engine, cap), TRL's vllm_importance_sampling_cap default.
IMPORTANCE_CAP = 2.0


@dataclass
class KLOptions:
    """The KL penalty's per-token estimator (Schulman's k1/k3), a setting of every method with a KL term.

    Both are computed at the sampled tokens, with r = log π_ref - log π. Their VALUES estimate
    KL(π || π_ref); used as a LOSS (differentiated through log π at fixed samples) they differ:
    - k3 = exp(r) - r - 1 (default): never negative; its expected gradient is (1 - π_ref/π) ∇log π summed
      under π, i.e. ∇ KL(π_ref || π), the reverse KL's gradient (as GRPO and TRL use it).
    - k1 = -r = log π - log π_ref: unbiased value, but its expected gradient is E_π[∇ log π] = 0: as a
      loss it regularises nothing in expectation (only adds variance); use it to log the value."""

    kl_estimator: str = setting("k3", choices=KL_ESTIMATORS)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum(-1)


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Estimator of KL(π || π_ref) at the sampled tokens, r = log π_ref - log π: k3 = exp(r) - r - 1
    (unbiased for the sequence KL under samples from π, never negative) or k1 = -r (see KLOptions for
    the gradient each gives as a loss)."""
    log_ratio = ref_logp - logp
    if estimator == "k1":
        return -log_ratio
    if estimator != "k3":
        raise ValueError(f"unknown KL estimator {estimator!r}; one of {', '.join(KL_ESTIMATORS)}")
    return torch.exp(log_ratio) - log_ratio - 1


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, norm: float,
               estimator: str = "k3") -> torch.Tensor:
    return masked_sum(kl_per_token(logp, ref_logp, estimator), mask).mean() / norm


def reinforce(logp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, norm: float) -> torch.Tensor:
    """-E[A · log π(y)]: the REINFORCE surrogate; advantages carry no gradient."""
    return -(advantages.detach() * masked_sum(logp, mask)).mean() / norm


def truncated_importance_weights(logp: torch.Tensor, engine_logp: torch.Tensor | None, masks: torch.Tensor,
                                 cap: float = IMPORTANCE_CAP) -> tuple[torch.Tensor, dict[str, float]]:
    """[K, E, T] the masks weighed by min(exp(log π - log π_engine), cap) at the sampled tokens, no
    gradient (weight 1 where the engine gave no log-prob; the masks themselves for on-policy rollouts),
    and the weights' mean and clipped share."""
    if engine_logp is None:
        return masks, {}
    ratio = torch.exp(logp.detach() - engine_logp.unsqueeze(0)).clamp(max=cap)
    weights = torch.where(torch.isnan(ratio), torch.ones_like(ratio), ratio) * masks
    tokens = masks.sum().clamp(min=1)
    clipped = ((ratio >= cap) & (masks > 0)).sum()
    return weights, {"is_weight": float(weights.sum() / tokens), "is_clipped": float(clipped / tokens)}


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
