"""`star`: SCoRe's multi-turn STaR baseline, the D+ variant (Zelikman et al., 2022; Kumar et al., 2024 §4).

Each iteration rolls out 2-attempt episodes (attempt 2 answers the correction instruction) with the
current policy, keeps every trace whose attempt 2 is correct (incorrect->correct AND correct->correct:
the D+ filter), and fine-tunes on them: cross-entropy on attempt 2's tokens given the trace before it
(`train_on: all` also trains attempt 1). 3 iterations by default. As in STaR (and ReST-EM), each
iteration's fine-tuning restarts from the base model (the LoRA re-initialised from the run's seed, a
fresh optimizer state) on that iteration's newly filtered data; only the sampling policy carries over
(iteration k+1 samples from the model iteration k trained). Each iteration logs its data size
(`examples`, `kept`, `kept_i_to_c`).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import setting
from harness.method import Method, register_method
from harness.training.objective import SFTObjective
from harness.training.sft import SFTOptions, examples_from_episodes


@dataclass
class StarOptions(SFTOptions):
    iterations: int = setting(3, ge=1)
    samples: int = setting(0, ge=0)  # episodes per problem; 0: the run's samples_per_problem
    train_on: str = setting("last", choices=("last", "all"))  # last: attempt 2 only | all: both attempts


def d_plus(episodes):
    """The traces STaR fine-tunes on: attempt 2 correct, whatever attempt 1 was."""
    return [e for e in episodes if e.correct[1]]


class StarObjective(SFTObjective):
    options_class = StarOptions
    restart_each_iteration = True

    def collect(self, ctx, problems):
        n = self.opts.samples or ctx.config.samples_per_problem
        episodes = ctx.sample([item for item in problems for _ in range(n)], turns=2)
        kept = d_plus(episodes)
        examples = examples_from_episodes(kept, ctx, [1] if self.opts.train_on == "last" else [0, 1])
        count = max(len(episodes), 1)
        return examples, {"r1": sum(e.correct[0] for e in episodes) / count,
                          "r2": sum(e.correct[1] for e in episodes) / count,
                          "sampled": float(len(episodes)), "kept": float(len(kept)),
                          "kept_i_to_c": float(sum(not e.correct[0] for e in kept))}


@register_method("star")
class Star(Method):
    objective = StarObjective
    paper = "Zelikman et al., 2022, STaR (multi-turn D+ variant as in SCoRe §4)"
    trains = "policy (LoRA): cross-entropy on traces whose attempt 2 is correct; each iteration restarts from the base"
