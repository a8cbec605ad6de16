"""`pair-sft`: Pair-SFT as defined in SCoRe §4 (Kumar et al., 2024), after Welleck et al. (2023).

Sample n first attempts per training problem from the base model; pair each incorrect attempt with a
correct attempt of the SAME problem; fine-tune attempt 2 on [x, wrong y1, correction instruction] ->
correct y (cross-entropy on y only). One iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import setting
from harness.method import Method, register_method
from harness.rollout.episode import Episode
from harness.training.objective import SFTObjective
from harness.training.sft import SFTOptions, example_from_stream


@dataclass
class PairSFTOptions(SFTOptions):
    samples: int = setting(4, ge=2)  # n first attempts per problem (a pair needs two)


def make_pairs(episodes: list[Episode]) -> list[tuple[Episode, Episode]]:
    """(wrong, right) first attempts of the same problem: every wrong attempt once, its partner cycling
    over that problem's right attempts. Problems with no right (or no wrong) attempt give no pair."""
    by_problem: dict[str, list[Episode]] = {}
    for episode in episodes:
        by_problem.setdefault(episode.item.id, []).append(episode)
    pairs = []
    for group in by_problem.values():
        right = [e for e in group if e.correct[0]]
        wrong = [e for e in group if not e.correct[0]]
        pairs.extend((w, right[i % len(right)]) for i, w in enumerate(wrong) if right)
    return pairs


class PairSFTObjective(SFTObjective):
    options_class = PairSFTOptions

    def collect(self, ctx, problems):
        episodes = ctx.sample([item for item in problems for _ in range(self.opts.samples)], turns=1)
        examples = []
        pairs = make_pairs(episodes)
        for wrong, right in pairs:
            first = wrong.attempts[0]
            request = self.method.next_request(ctx.task, wrong.item, wrong)  # [x, y1, correction instruction]
            prompt = ctx.generator.continuation(first.messages, first.completion(), request.messages) \
                or ctx.generator.encode(request.messages)
            examples.append(example_from_stream(wrong.item.id, prompt, right.attempts[0], ctx.eos_ids))
        return examples, {"r1": sum(e.correct[0] for e in episodes) / max(len(episodes), 1),
                          "pairs": float(len(pairs)), "paired_problems": float(len({w.item.id for w, _ in pairs}))}


@register_method("pair-sft")
class PairSFT(Method):
    name = "pair-sft"
    objective = PairSFTObjective
    paper = "Welleck et al., 2023, Generating Sequences by Learning to Self-Correct (as Pair-SFT in SCoRe §4)"
    trains = "policy (LoRA): cross-entropy on a correct y given [x, wrong y1, instruction]"
