"""`score`: SCoRe, two-stage multi-turn REINFORCE with a reward bonus (Kumar et al., 2024).

Stage I (steps < stage1_steps): maximize r(y2), a strong KL (beta2) keeping attempt 1 at the base
model and the weak KL (beta1) on attempt 2. Stage II: maximize r(y1) + r̂(y2), with
r̂(y2) = r(y2) + alpha * (r(y2) - r(y1)), and KL beta1 on both attempts.
REINFORCE with gamma = 0 (each attempt is credited with its own reward only) and a leave-one-out
baseline over the samples of the same problem (batch mean when a problem has one sample).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import setting
from harness.method import Method, register_method
from harness.training.losses import KLOptions, baseline_advantages, kl_penalty, reinforce, shaped_second_reward
from harness.training.objective import LossOutput, RLBatch, TrainContext, TwoStageObjective


@dataclass
class ScoreOptions(KLOptions):
    alpha: float = setting(10.0, ge=0)  # reward-bonus weight (Table 5)
    beta1: float = setting(0.01, ge=0)  # weak KL
    beta2: float = setting(0.1, ge=0)  # strong KL on attempt 1 in stage I
    stage1_steps: int = setting(0, ge=0)  # 0: a third of max_steps
    baseline: str = setting("loo", choices=("loo", "batch_mean"))


def score_loss(batch: RLBatch, opts: ScoreOptions, stage: int) -> LossOutput:
    (m1, m2), (lp1, lp2), (ref1, ref2) = batch.masks, batch.logp, batch.ref_logp
    r1, r2 = batch.rewards
    kl1 = kl_penalty(lp1, ref1, m1, batch.norm, opts.kl_estimator)
    kl2 = kl_penalty(lp2, ref2, m2, batch.norm, opts.kl_estimator)
    if stage == 1:
        pg = reinforce(lp2, batch.pg_masks[1], baseline_advantages(r2, batch.groups, opts.baseline), batch.norm)
        loss = pg + opts.beta2 * kl1 + opts.beta1 * kl2
    else:
        shaped = shaped_second_reward(r1, r2, opts.alpha)
        w1, w2 = batch.pg_masks
        pg = reinforce(lp1, w1, baseline_advantages(r1, batch.groups, opts.baseline), batch.norm) + \
            reinforce(lp2, w2, baseline_advantages(shaped, batch.groups, opts.baseline), batch.norm)
        loss = pg + opts.beta1 * (kl1 + kl2)
    return LossOutput(loss, {"loss": loss.item(), "pg_loss": pg.item(), "kl1": kl1.item(), "kl2": kl2.item(),
                             "stage": float(stage)})


class ScoreObjective(TwoStageObjective):
    """The trainer rolls out 2-attempt episodes (RLObjective.rollout), computes log-probs, calls `loss`
    on each micro-batch, backpropagates it and steps the policy's optimizer (the policy only)."""

    options_class = ScoreOptions

    def loss(self, batch: RLBatch, ctx: TrainContext) -> LossOutput:
        return score_loss(batch, self.opts, self.stage_of(batch.step))


@register_method("score")
class Score(Method):
    objective = ScoreObjective
    paper = "Kumar et al., 2024, Training Language Models to Self-Correct via Reinforcement Learning"
    trains = "policy (LoRA): REINFORCE, stage I then stage II with reward bonus"
    checkpoint_select = "best"  # SCoRe §6: the checkpoint with the highest training reward is kept
