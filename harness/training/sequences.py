"""From 2-attempt episodes to tensors: one sequence [prompt, y1, instruction, y2] per episode, with a
mask per attempt over the tokens that attempt sampled, and per-token log-probs computed only there."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.rollout.episode import Episode


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor  # [E, T], right-padded
    attention_mask: torch.Tensor  # [E, T]
    action_masks: torch.Tensor  # [K, E, T] float: 1 where token t was sampled by step k (its EOS included)
    state_ends: torch.Tensor  # [K, E] index of the last token of state s_k (the prompt step k answered)
    # [E, T] the sampling engine's log-prob of each sampled token (NaN where it gave none); None: the
    # trainer's own model sampled (hf backend), so rollouts are on-policy
    engine_logp: torch.Tensor | None = None

    def to(self, device) -> "SequenceBatch":
        engine = None if self.engine_logp is None else self.engine_logp.to(device)
        return SequenceBatch(self.input_ids.to(device), self.attention_mask.to(device), self.action_masks.to(device),
                             self.state_ends.to(device), engine)

    def select(self, rows: list[int]) -> "SequenceBatch":
        index = torch.tensor(rows, dtype=torch.long)
        engine = None if self.engine_logp is None else self.engine_logp[index]
        return SequenceBatch(self.input_ids[index], self.attention_mask[index], self.action_masks[:, index],
                             self.state_ends[:, index], engine)


def build_sequences(episodes: list[Episode], pad_id: int, eos_ids: list[int], steps: str = "attempts") -> SequenceBatch:
    """Each episode's last step continues the token stream of the earlier ones (see
    HFGenerator.continuation), so one sequence holds every step exactly as it was sampled. The masks
    are per attempt (`steps="attempts"`) or per generation step of any kind (`"all"`: a reflection too)."""
    rows, spans, ends = [], [], []
    for episode in episodes:
        attempts = episode.attempts if steps == "attempts" else episode.steps
        last = attempts[-1]
        ids = [*last.prompt_ids, *last.token_ids] + ([eos_ids[0]] if last.finished else [])
        row_spans, row_ends = [], []
        for attempt in attempts:
            start = len(attempt.prompt_ids)
            if list(ids[:start]) != list(attempt.prompt_ids) or \
                    list(ids[start:start + len(attempt.token_ids)]) != list(attempt.token_ids):
                raise ValueError(f"{episode.item.id}: steps do not share one token stream; "
                                 "RL training needs the core's continuation of the conversation")
            stop = start + len(attempt.token_ids)
            if attempt.finished and stop < len(ids) and ids[stop] in eos_ids:
                stop += 1  # the sampled EOS is an action too
            row_spans.append((start, stop))
            row_ends.append(start - 1)
        rows.append(ids)
        spans.append(row_spans)
        ends.append(row_ends)
    width = max(len(r) for r in rows)
    k = len(spans[0])
    if any(len(row_spans) != k for row_spans in spans):
        raise ValueError("every episode of a training batch needs the same number of steps")
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    masks = torch.zeros((k, len(rows), width))
    for e, (ids, row_spans) in enumerate(zip(rows, spans)):
        input_ids[e, : len(ids)] = torch.tensor(ids)
        attention[e, : len(ids)] = 1
        for a, (start, stop) in enumerate(row_spans):
            masks[a, e, start:stop] = 1.0
    return SequenceBatch(input_ids, attention, masks, torch.tensor(ends, dtype=torch.long).T.contiguous(),
                         _engine_logprobs(episodes, spans, width, steps))


def _engine_logprobs(episodes: list[Episode], spans, width: int, steps: str) -> torch.Tensor | None:
    """[E, T] the engine's log-probs at the sampled tokens (NaN elsewhere), or None when no step has any."""
    chosen = [e.attempts if steps == "attempts" else e.steps for e in episodes]
    if not any(s.engine_logprobs for row in chosen for s in row):
        return None
    engine = torch.full((len(episodes), width), float("nan"))
    for e, (row, row_spans) in enumerate(zip(chosen, spans)):
        for step, (start, _) in zip(row, row_spans):
            values = step.engine_logprobs[: len(step.token_ids)]
            engine[e, start : start + len(values)] = torch.tensor(values, dtype=engine.dtype)
    return engine


class TokenLogprobs(nn.Module):
    """Per-token log-probs (and entropies) of a causal LM at the action positions only.

    The LM head runs on the selected hidden states, not on every position: on a 150k-token vocabulary
    the full [E, T, V] logits of long prompts would dominate memory. A module (not a function) so that
    DDP wraps it and synchronises gradients.
    """

    def __init__(self, causal_lm: nn.Module):
        super().__init__()
        self.lm = causal_lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, action_mask: torch.Tensor,
                with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # Position t's token is predicted by the hidden state at t - 1.
        selected = action_mask[:, 1:] > 0
        logits = base.get_output_embeddings()(hidden[:, :-1][selected]).float()
        logprobs = torch.log_softmax(logits, dim=-1)
        token_logp = logprobs.gather(-1, input_ids[:, 1:][selected].unsqueeze(-1)).squeeze(-1)
        out = torch.zeros(action_mask.shape, dtype=token_logp.dtype, device=token_logp.device)
        out[:, 1:][selected] = token_logp
        entropy = None
        if with_entropy:
            entropy = torch.zeros_like(out)
            entropy[:, 1:][selected] = -(logprobs.exp() * logprobs).sum(-1)
        return out, entropy


# ---- what an update's passes processed (log.jsonl; FLOPs in harness.diagnostics.TrainingTokens) ----------

def sequence_length(episode: Episode, steps: str = "attempts") -> int:
    """Tokens of the episode's sequence in `build_sequences` (padding left out): its last step's prompt, that
    step's sampled tokens and its EOS. The prompt holds everything before: [x, y1, instruction, ...]."""
    last = (episode.attempts if steps == "attempts" else episode.steps)[-1]
    return len(last.prompt_ids) + len(last.token_ids) + int(last.finished)


def summed_over_processes(accelerator, counts: dict[str, float]) -> dict[str, float]:
    """A step's token counts (each process ran its share of the data) summed over processes, for its
    log.jsonl record; `*_parameters` entries are sizes, not counts, and stay as they are.

    Every pass runs over whole sequences, prompt included, not only the sampled tokens: an RL episode's
    [x, y1, instruction, y2] (`sequence_length`; RRR's reflection and its request too), an SFT example's
    prompt and target (`input_ids`). Padding is left out. Keys: `policy_tokens` (the policy's forward and
    backward pass), `reference_tokens` (RL: the reference's forward over the same sequences),
    `critic_tokens` and `critic_parameters` (a module the objective trains beside the policy; see
    harness/training/steps.py). A skipped step (nothing to learn from) ran no pass: every count is 0."""
    if accelerator.num_processes == 1:
        return counts
    keys = [k for k in counts if not k.endswith("_parameters")]
    summed = accelerator.reduce(torch.tensor([counts[k] for k in keys], device=accelerator.device), "sum").tolist()
    return {**counts, **dict(zip(keys, summed))}
