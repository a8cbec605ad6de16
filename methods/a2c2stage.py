"""`a2c2stage`: two-stage advantage actor-critic for self-correction (Isaev & Ilyushin).

Episode of T = 2 steps: s1 = [x], a1 = y1; s2 = [x, y1, p], a2 = y2. A critic V(s) (by default the
same base model with its own LoRA adapter and a scalar value head read at the state's last token;
`critic_model` names a separate, e.g. smaller, model) gives A_t = r_t + γ V(s_{t+1}) - V(s_t) with
V(s_3) = 0. Actor: -A_t log π(a_t|s_t) - c H(π(·|s_t)); critic: (r_t + γ V(s_{t+1}) - V(s_t))^2, with
its own learning rate.

Stage I: r1 := 0, r2 = r(y2). The actor (policy gradient and entropy) is applied to step 2 only;
attempt 1 gets nothing but β1 KL(π(·|s1) || π_ref(·|s1)), which holds it near the reference (the
paper's Stage I optimises t = 2). Stage II: r1 = r(y1), r2' = r2 + α (r2 - r1) with α > 1, actor and
entropy on both steps, β2 KL on both steps.

Credit for attempt 1 (choices the paper leaves open, made here so attempt 1 is never paid to fail):
- γ = 0 by default, as SCoRe App. A.2 does for the same reason: each attempt is credited with its own
  reward, so A_1 = r1 - V(s1) rises with r1 whatever attempt 2 does.
- With γ > 0, attempt 1's bootstrap is the value of the UNSHAPED r2. The critic learns V(s2) towards
  r2' = (1 + α) r2 - α r1 (r1 is known at s2), so (V(s2) + α r1) / (1 + α) is the value of r2 itself:
  A_1 = r1 + γ (V(s2) + α r1)/(1 + α) - V(s1). Bootstrapping on V(s2) directly would make attempt 1's
  credit about (1 - γα) r1 + γ(1 + α) r2: at γ = 1, α = 2 a wrong-then-right episode would earn 3 and a
  right-then-right one 2, teaching the actor to fail first. The shaping bonus reaches attempt 2 only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.config import setting
from harness.method import Method, register_method
from harness.training.losses import KLOptions, entropy_bonus, kl_penalty, reinforce, shaped_second_reward, td_targets
from harness.training.objective import LossOutput, RLBatch, TrainContext, TrainableModule, TwoStageObjective
from harness.lora import attach_lora
from harness.sampling import seed_for
from harness.training.policy import adapter, adapter_parameters, add_adapter, decoder


@dataclass
class A2COptions(KLOptions):
    alpha: float = setting(2.0, gt=1)  # stage II shaping, > 1
    beta1: float = setting(0.01, ge=0)  # stage I KL on step 1
    beta2: float = setting(0.01, ge=0)  # stage II KL on both steps
    gamma: float = setting(0.0, ge=0, le=1)  # 0: each attempt credited with its own reward (see above)
    entropy_coef: float = setting(0.01, ge=0)
    critic_lr: float = setting(1e-4, gt=0)
    critic_model: str | None = None  # None: the policy's base model with a "critic" LoRA adapter
    stage1_steps: int = setting(0, ge=0)  # 0: a third of max_steps
    max_grad_norm: float = setting(1.0, ge=0)  # 0: no clipping


def shaped_rewards(r1: torch.Tensor, r2: torch.Tensor, stage: int, alpha: float) -> torch.Tensor:
    """[2, E] rewards per step for the stage."""
    if stage == 1:
        return torch.stack([torch.zeros_like(r1), r2])
    return torch.stack([r1, shaped_second_reward(r1, r2, alpha)])


def unshaped_value(v2: torch.Tensor, r1: torch.Tensor, stage: int, alpha: float) -> torch.Tensor:
    """The value of r2 itself at s2, from a critic trained towards the stage's r2: in stage II that is
    r2' = (1 + α) r2 - α r1, so E[r2 | s2] = (V(s2) + α r1) / (1 + α); in stage I r2 is unshaped."""
    return v2 if stage == 1 else (v2 + alpha * r1) / (1 + alpha)


def advantages_and_targets(rewards: torch.Tensor, values: torch.Tensor, gamma: float,
                           bootstrap: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A_t = r_t + γ V(s_{t+1}) - V(s_t) and the critic's targets r_t + γ V(s_{t+1}), for T = 2.
    `bootstrap` stands for V(s2) in step 1's target (default: V(s2) itself)."""
    v2 = values[1] if bootstrap is None else bootstrap
    next_values = torch.stack([v2, torch.zeros_like(values[1])])  # V(s_3) = 0
    targets = td_targets(rewards, next_values, gamma)
    return (targets - values).detach(), targets


def a2c_loss(batch: RLBatch, values: torch.Tensor, opts: A2COptions, stage: int) -> LossOutput:
    """Actor loss plus critic loss (the critic's parameters only see the latter). `values` is [2, E]
    V(s1), V(s2) with gradient. Logged "loss" is the actor's, "critic_loss" the critic's."""
    r1, r2 = batch.rewards
    rewards = shaped_rewards(r1, r2, stage, opts.alpha)
    bootstrap = unshaped_value(values[1].detach(), r1, stage, opts.alpha)
    adv, targets = advantages_and_targets(rewards, values, opts.gamma, bootstrap)
    masks, norm = batch.masks, batch.norm
    acting = [1] if stage == 1 else [0, 1]  # stage I: attempt 1 only held by the KL term
    actor = sum(reinforce(batch.logp[t], batch.pg_masks[t], adv[t], norm) for t in acting)
    entropy = sum(entropy_bonus(batch.entropy[t], masks[t], norm) for t in acting)
    kl = [kl_penalty(batch.logp[t], batch.ref_logp[t], masks[t], norm, opts.kl_estimator) for t in range(2)]
    kl_term = opts.beta1 * kl[0] if stage == 1 else opts.beta2 * (kl[0] + kl[1])
    loss = actor - opts.entropy_coef * entropy + kl_term
    critic = ((targets.detach() - values) ** 2).sum(0).mean()
    logs = {name: float(value.detach()) for name, value in (
        ("loss", loss), ("actor_loss", actor), ("entropy", entropy), ("kl1", kl[0]), ("kl2", kl[1]),
        ("critic_loss", critic), ("v1", values[0].mean()), ("v2", values[1].mean()), ("adv1", adv[0].mean()),
        ("adv2", adv[1].mean()))}
    logs["stage"] = float(stage)
    return LossOutput(loss + critic, logs)


class Critic(nn.Module):
    """V(s): a causal LM backbone (shared base + own adapter, or its own model) and a linear head."""

    def __init__(self, ctx: TrainContext, opts: A2COptions):
        super().__init__()
        # Full fine-tuning has no adapters to share the base with: the critic then loads its own copy.
        self.shared = opts.critic_model is None and hasattr(ctx.policy, "peft_config")
        if self.shared:
            add_adapter(ctx.policy, "critic", ctx.config.lora, seed_for(ctx.config.seed, "critic"))
            self.backbone_owner = [ctx.policy]  # a list: not registered as a submodule (it is the policy)
            self.tokenizer = ctx.tokenizer
            hidden = ctx.policy.get_base_model().config.hidden_size
        else:
            loaded = ctx.load_model(opts.critic_model or ctx.config.model)
            self.lm = attach_lora(loaded.model, ctx.config.lora, seed_for(ctx.config.seed, "critic"))
            self.tokenizer = loaded.tokenizer
            hidden = loaded.model.config.hidden_size
        self.head = nn.Linear(hidden, 1).to(ctx.device)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Its adapter (or its whole model under full fine-tuning) and its head."""
        if self.shared:
            backbone = adapter_parameters(self.backbone_owner[0], "critic")
        else:
            backbone = {n: p for n, p in self.lm.named_parameters() if p.requires_grad}
        return {**backbone, **{f"head.{n}": p for n, p in self.head.named_parameters()}}

    def values(self, batch: RLBatch) -> torch.Tensor:
        """[2, E]: the value of each state, read at the state's last token."""
        if self.shared:
            policy = self.backbone_owner[0]
            seq = batch.sequences
            with adapter(policy, "critic"):
                hidden = decoder(policy)(input_ids=seq.input_ids, attention_mask=seq.attention_mask).last_hidden_state
            rows = torch.arange(seq.input_ids.shape[0], device=hidden.device)
            return torch.stack([self.head(hidden[rows, seq.state_ends[t]]).squeeze(-1) for t in range(2)])
        out = []
        for t in range(2):  # another tokenizer: encode the states' conversations afresh
            chats = [e.attempts[t].messages for e in batch.episodes]
            enc = self.tokenizer.apply_chat_template(chats, add_generation_prompt=True, return_tensors="pt",
                                                     padding=True, return_dict=True).to(self.head.weight.device)
            hidden = decoder(self.lm)(**enc).last_hidden_state
            out.append(self.head(hidden[:, -1]).squeeze(-1))  # left padding: the last column is the last token
        return torch.stack(out)


class A2CObjective(TwoStageObjective):
    options_class = A2COptions
    needs_entropy = True

    def setup(self, ctx: TrainContext) -> list[TrainableModule]:
        super().setup(ctx)
        self.critic = Critic(ctx, self.opts)
        return [TrainableModule("critic", self.critic, self.opts.critic_lr, self.opts.max_grad_norm)]

    def loss(self, batch: RLBatch, ctx: TrainContext) -> LossOutput:
        return a2c_loss(batch, self.critic.values(batch), self.opts, self.stage_of(batch.step))


@register_method("a2c2stage")
class A2CTwoStage(Method):
    objective = A2CObjective
    paper = "Isaev & Ilyushin, two-stage advantage actor-critic for LLM self-correction"
    trains = "policy (LoRA) + critic (own LoRA adapter + value head)"
