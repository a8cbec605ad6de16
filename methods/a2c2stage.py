"""`a2c2stage`: two-stage advantage actor-critic for self-correction (Isaev & Ilyushin).

Episode of T = 2 steps: s1 = [x], a1 = y1; s2 = [x, y1, p], a2 = y2. A critic V(s) (by default the
same base model with its own LoRA adapter and a scalar value head read at the state's last token;
`critic_model` names a separate, e.g. smaller, model) gives A_t = r_t + γ V(s_{t+1}) - V(s_t) with
V(s_3) = 0. Actor: -A_t log π(a_t|s_t) - c H(π(·|s_t)); critic: (r_t + γ V(s_{t+1}) - V(s_t))^2, with
its own learning rate. Stage I: r1 := 0, r2 = r(y2), plus β1 KL(π(·|s1) || π_ref(·|s1)). Stage II: r1 = r(y1),
r2' = r2 + α (r2 - r1) with α > 1, plus β2 KL on both steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.config import setting
from harness.method import Method, register_method
from harness.training.losses import entropy_bonus, kl_penalty, reinforce, shaped_second_reward, td_targets
from harness.training.objective import LossOutput, RLBatch, RLObjective, TrainContext, TrainableModule, TwoStages
from harness.training.policy import adapter, adapter_parameters, add_adapter, attach_lora, decoder


@dataclass
class A2COptions:
    alpha: float = setting(2.0, gt=1)  # stage II shaping, > 1
    beta1: float = setting(0.01, ge=0)  # stage I KL on step 1
    beta2: float = setting(0.01, ge=0)  # stage II KL on both steps
    gamma: float = setting(1.0, ge=0, le=1)
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


def advantages_and_targets(rewards: torch.Tensor, values: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A_t = r_t + γ V(s_{t+1}) - V(s_t) and the critic's targets r_t + γ V(s_{t+1}), for T = 2."""
    next_values = torch.stack([values[1], torch.zeros_like(values[1])])  # V(s_3) = 0
    targets = td_targets(rewards, next_values, gamma)
    return (targets - values).detach(), targets


def a2c_loss(batch: RLBatch, values: torch.Tensor, opts: A2COptions, stage: int) -> LossOutput:
    """Actor loss plus critic loss (the critic's parameters only see the latter). `values` is [2, E]
    V(s1), V(s2) with gradient. Logged "loss" is the actor's, "critic_loss" the critic's."""
    r1, r2 = batch.rewards
    rewards = shaped_rewards(r1, r2, stage, opts.alpha)
    adv, targets = advantages_and_targets(rewards, values, opts.gamma)
    masks, norm = batch.masks, batch.norm
    actor = sum(reinforce(batch.logp[t], masks[t], adv[t], norm) for t in range(2))
    entropy = sum(entropy_bonus(batch.entropy[t], masks[t], norm) for t in range(2))
    kl = [kl_penalty(batch.logp[t], batch.ref_logp[t], masks[t], norm) for t in range(2)]
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
            add_adapter(ctx.policy, "critic", ctx.config.lora)
            self.backbone_owner = [ctx.policy]  # a list: not registered as a submodule (it is the policy)
            self.tokenizer = ctx.tokenizer
            hidden = ctx.policy.get_base_model().config.hidden_size
        else:
            loaded = ctx.load_model(opts.critic_model or ctx.config.model)
            self.lm = attach_lora(loaded.model, ctx.config.lora, ctx.config.seed + 1)
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


class A2CObjective(RLObjective):
    options_class = A2COptions
    needs_entropy = True

    def setup(self, ctx: TrainContext) -> list[TrainableModule]:
        self.stages = TwoStages.of(self.opts.stage1_steps, ctx.config.max_steps)
        self.critic = Critic(ctx, self.opts)
        return [TrainableModule("critic", self.critic, self.opts.critic_lr, self.opts.max_grad_norm)]

    def stage_ends(self) -> list[int]:
        return self.stages.ends()

    def loss(self, batch: RLBatch, ctx: TrainContext) -> LossOutput:
        return a2c_loss(batch, self.critic.values(batch), self.opts, self.stages.stage_of(batch.step))


@register_method("a2c2stage")
class A2CTwoStage(Method):
    name = "a2c2stage"
    objective = A2CObjective
    paper = "Isaev & Ilyushin, two-stage advantage actor-critic for LLM self-correction"
    trains = "policy (LoRA) + critic (own LoRA adapter + value head)"
