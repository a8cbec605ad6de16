"""`rrr`: Reflect, Retry, Reward (Bensal et al., 2025).

On a failed first attempt the model writes a self-reflection on what went wrong, then retries with the
reflection in context. Training samples G reflections per failed problem (a GRPO group); the reward is
the retry's correctness and the advantage is reward minus the group mean (optionally divided by the
group std). Only the reflection tokens receive the advantage: attempts 1 and 2 are masked out. Only
failed problems are trained on.

At evaluation with the default `--feedback none` (intrinsic self-correction, SCoRe's protocol) the
harness gives no verifier signal: the model reflects after every attempt and then retries, so its Δc→i
is measured, not zero. `--feedback oracle` is the paper's protocol, applied by the harness to every
method (this one does not know it): a correct attempt ends the episode, and after a wrong one the
reflection request starts by saying the answer was incorrect, so Δc→i is zero by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import setting
from harness.errors import HarnessError
from harness.method import Method, Request, register_method
from harness.prompts import ANSWER_FORMAT, answer_format_for
from harness.rollout.episode import Episode
from harness.training.losses import KLOptions, group_advantages, kl_penalty, reinforce
from harness.training.objective import LossOutput, RLBatch, RLObjective, TrainContext, TrainableModule

REFLECT = (
    "Your solution above may be wrong. Reflect on it: point out what went wrong (a misunderstanding, a "
    "wrong setup or an arithmetic slip) and how to avoid it. Do not write a new solution yet."
)
# A task may word both its own way (`Task.reflect_instruction`, `Task.answer_format`); these are math's.
RETRY_REQUEST = "Now solve the problem again, using your reflection. "
RETRY = RETRY_REQUEST + ANSWER_FORMAT
REFLECTION = 1  # step index of the reflection in a training episode [attempt 1, reflection, attempt 2]


@dataclass
class RRROptions(KLOptions):
    group_size: int = setting(4, ge=1)  # G reflections per failed first attempt
    scale_by_std: bool = False  # divide the advantage by the group's reward std (GRPO's normalisation)
    beta: float = setting(0.0, ge=0)  # KL to the reference on the reflection tokens


def rrr_loss(batch: RLBatch, opts: RRROptions) -> LossOutput:
    retry_reward = batch.rewards[1]
    adv = group_advantages(retry_reward, batch.groups, opts.scale_by_std)
    logp, mask = batch.logp[REFLECTION], batch.masks[REFLECTION]
    pg = reinforce(logp, batch.pg_masks[REFLECTION], adv, batch.norm)
    kl = kl_penalty(logp, batch.ref_logp[REFLECTION], mask, batch.norm, opts.kl_estimator)
    loss = pg + opts.beta * kl
    return LossOutput(loss, {"loss": loss.item(), "pg_loss": pg.item(), "kl_reflection": kl.item(),
                             "retry_reward": retry_reward.mean().item()})


class RRRObjective(RLObjective):
    options_class = RRROptions
    masked_steps = "all"  # the loss needs the reflection's tokens, not only the attempts'

    def setup(self, ctx: TrainContext) -> list[TrainableModule]:
        if ctx.accelerator.num_processes > 1:
            # Each process would train on its own number of failed problems (possibly none): DDP's collective
            # backward would wait forever. Until episodes are balanced across processes, refuse cleanly.
            raise HarnessError("rrr does not run multi-process yet (failed problems differ per process)")
        self._logs: dict[str, float] = {}
        return []

    def rollout(self, ctx, problems):
        first = ctx.sample(problems, turns=1)
        failed = [e for e in first if not e.correct[0]]
        self._logs = {"first_attempt_acc": sum(e.correct[0] for e in first) / max(len(first), 1),
                      "failed_problems": float(len(failed))}
        groups = [Episode(e.item, list(e.steps)) for e in failed for _ in range(self.opts.group_size)]
        return ctx.sample(None, turns=2, episodes=groups) if groups else []

    def group_key(self, episode: Episode):
        # A GRPO group is the G reflections on ONE first attempt (its copies share that Step object), even
        # when a step drew the same problem twice.
        return id(episode.steps[0])

    def rollout_logs(self) -> dict[str, float]:
        return self._logs

    def loss(self, batch: RLBatch, ctx) -> LossOutput:
        return rrr_loss(batch, self.opts)


@register_method("rrr")
class ReflectRetryReward(Method):
    objective = RRRObjective
    paper = "Bensal et al., 2025, Reflect, Retry, Reward: Self-Improving LLMs via Reinforcement Learning"
    trains = "policy (LoRA): GRPO on the reflection tokens of failed problems"

    def next_request(self, task, item, episode: Episode) -> Request:
        last = episode.steps[-1]
        reflecting = last.kind == "attempt"
        message = (task.reflect_instruction or REFLECT) if reflecting else RETRY_REQUEST + answer_format_for(task)
        return self.follow_up(last, message, "reflection" if reflecting else "attempt")
