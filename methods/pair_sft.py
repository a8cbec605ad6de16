"""`pair-sft`: Pair-SFT as defined in SCoRe §4 and its appendix (Kumar et al., 2024), after Welleck et al. (2023).

Data: two-turn traces of the base model (the run's temperature, 1.0 by default as in the paper),
`samples` per training problem. Every response of a problem, first AND second turn, is graded; each
incorrect one is paired with a correct one drawn at random (seeded by the run's seed) from all of that
problem's correct responses, first- and second-turn alike. Problems with no correct (or no incorrect)
response give no pair. Fit: attempt 2 on [x, incorrect y, correction instruction] -> correct y
(cross-entropy on y only), exactly ONE epoch over the pairs: the number of steps follows from the data
(ceil(pairs / problems_per_step), logged as `epoch_steps`), not from max_steps, and no pair is seen twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.config import setting
from harness.method import Method, register_method
from harness.rollout.episode import Episode, Step
from harness.sampling import rng_for
from harness.training.objective import SFTObjective
from harness.training.sft import SFTOptions, example_from_stream


@dataclass
class PairSFTOptions(SFTOptions):
    samples: int = setting(4, ge=1)  # two-turn traces per problem (each gives two responses)
    epochs: int = setting(1, ge=1)  # passes over the pairs (the paper: one); the steps follow from the data


def responses(episode: Episode) -> list[Step]:
    """The episode's generated attempts (a carried copy is not a response of its own)."""
    return [step for step in episode.attempts if not step.carried]


def make_pairs(episodes: list[Episode], seed: int) -> list[tuple[Episode, Step, Step]]:
    """(episode, incorrect response, correct response) of the same problem: every incorrect response
    once, its partner drawn at random from all the problem's correct responses (both turns)."""
    by_problem: dict[str, list[Episode]] = {}
    for episode in episodes:
        by_problem.setdefault(episode.item.id, []).append(episode)
    rng = rng_for(seed, "pair-sft")
    pairs = []
    for group in by_problem.values():
        found = [(e, s) for e in group for s in responses(e)]
        right = [s for _, s in found if s.grade is not None and s.grade.correct]
        if not right:
            continue
        pairs.extend((e, s, rng.choice(right)) for e, s in found if not (s.grade is not None and s.grade.correct))
    return pairs


class PairSFTObjective(SFTObjective):
    options_class = PairSFTOptions

    def collect(self, ctx, problems):
        episodes = ctx.sample([item for item in problems for _ in range(self.opts.samples)], turns=2)
        examples = []
        pairs = make_pairs(episodes, ctx.config.seed)
        for episode, wrong, right in pairs:
            # The incorrect response takes attempt 1's place after the problem's prompt, whichever turn it came from.
            first = episode.attempts[0]
            as_first = replace(wrong, messages=first.messages, prompt_ids=first.prompt_ids)
            request = self.method.next_request(ctx.task, episode.item, Episode(episode.item, [as_first]))
            prompt = ctx.generator.continuation(first.messages, as_first.completion(), request.messages) \
                or ctx.generator.encode(request.messages)
            examples.append(example_from_stream(episode.item.id, prompt, right, ctx.eos_ids))
        turns = [s for e in episodes for s in responses(e)]
        second = [e.attempts[1] for e in episodes if not e.attempts[1].carried]
        second_ids = {id(s) for s in second}
        return examples, {"r1": sum(e.correct[0] for e in episodes) / max(len(episodes), 1),
                          "r2": sum(bool(s.grade and s.grade.correct) for s in second) / max(len(second), 1),
                          "responses": float(len(turns)), "pairs": float(len(pairs)),
                          "pairs_right_from_turn2": float(sum(id(r) in second_ids for _, _, r in pairs)),
                          "paired_problems": float(len({e.item.id for e, _, _ in pairs}))}


@register_method("pair-sft")
class PairSFT(Method):
    objective = PairSFTObjective
    paper = "Welleck et al., 2023, Generating Sequences by Learning to Self-Correct (as Pair-SFT in SCoRe §4)"
    trains = "policy (LoRA): cross-entropy on a correct y given [x, incorrect y, instruction], one epoch over pairs"
