"""What lies behind a Δ: how much attempt k+1 differs from attempt k, whether the final answer moved,
the four t1→t2 transitions, the compute each row spent, and a paired test of each method against `base`.

Pure functions over stored episodes (a run's samples, read as `Episode`s) and training logs, so
`compare` and `report` give the same bytes. Edit ratio: character-level Levenshtein distance divided by the longer
text's length (rapidfuzz `Levenshtein.normalized_distance`; 0 = identical, 1 = nothing in common), the
quantity of SCoRe's edit-distance histograms (Kumar et al., 2024, Fig. 4/5). FLOPs: the usual estimate
(Kaplan et al., 2020), N = the model's parameter count: 2·N per token a forward pass processes, 6·N per
token of a forward and backward pass. Inference: 2·N·(prefill + generated tokens). Training
(`TrainingTokens`): every token of every sequence an update's passes ran over, prompt included:
6·N·policy tokens + 2·N·reference tokens + 6·N·critic tokens (N_critic for a critic that is its own model).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from harness.grading.latex import exact_text
from harness.grading.numeric import to_fraction
from harness.metrics import mcnemar_exact_p
from harness.rollout.episode import Episode, Step

TRANSITIONS = ("i→c", "c→i", "c→c", "i→i")  # attempt 1 → attempt 2
BUDGET_SPREAD = 0.10  # rows whose generated tokens per problem differ by more than this get a note


def edit_ratio(before: str, after: str) -> float:
    """Character-level edit distance normalised to [0, 1] (by the longer text); two empty texts: 0."""
    from rapidfuzz.distance import Levenshtein

    return float(Levenshtein.normalized_distance(before, after))


def _answer(step: Step) -> tuple[str, Any]:
    """What "the answer changed" compares: the grader's extracted answer as a number where it reads as
    one ("20" and "20.00" or "1,200" and "1200" are one answer), else its LaTeX with spacing and text
    macros normalized ("\\dfrac{1}{2}" and "\\frac{1}{2}"); the whole text when the grader extracted none."""
    extracted = step.grade.extracted if step.grade else None
    if extracted is None:
        return ("text", step.text)
    number = to_fraction(str(extracted))
    return ("number", number) if number is not None else ("answer", exact_text(str(extracted).strip()))


@dataclass(frozen=True)
class EpisodeDiagnostics:
    edit_ratios: tuple[float, ...]  # attempt k → k+1, for k = 1 .. K-1
    answer_changed: bool  # attempt 1's answer differs from attempt K's
    transition: str  # one of TRANSITIONS, attempt 1 → attempt 2 (the table's Δi→c / Δc→i pair)


def episode_diagnostics(episode: Episode, turns: int | None = None) -> EpisodeDiagnostics:
    steps = episode.attempts_within(turns)
    if len(steps) < 2:
        raise ValueError(f"episode {episode.item.id!r} has {len(steps)} attempt(s); diagnostics need 2")
    ratios = tuple(edit_ratio(a.text, b.text) for a, b in zip(steps, steps[1:]))
    correct = episode.correct
    first, second = ("c" if correct[0] else "i"), ("c" if correct[1] else "i")
    return EpisodeDiagnostics(ratios, _answer(steps[0]) != _answer(steps[-1]), f"{first}→{second}")


def episodes_csv(rows: dict[str, list[Episode]], turns: int) -> str:
    """One line per (method, episode): its transition, whether the answer changed, attempt 1's and attempt K's
    extracted answers, and the edit ratio of each consecutive pair (for finding the episodes behind a number)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "id", "transition", "answer_changed", "answer_first", "answer_last",
                     *(f"edit_ratio_{k}_{k + 1}" for k in range(1, turns))])
    for label, episodes in rows.items():
        for episode in episodes:
            found = episode_diagnostics(episode, turns)
            steps = episode.attempts_within(turns)
            answers = [step.grade.extracted if step.grade else None for step in (steps[0], steps[-1])]
            writer.writerow([label, episode.item.id, found.transition, int(found.answer_changed),
                             *("" if a is None else str(a) for a in answers),
                             *(format(r, ".6f") for r in found.edit_ratios), *[""] * (turns - len(steps))])
    return buffer.getvalue()


@dataclass(frozen=True)
class RowDiagnostics:
    n: int
    answer_changed: float  # fraction of episodes whose final answer differs from attempt 1's
    median_edit_ratio: float  # over every consecutive pair of attempts of every episode
    transitions: dict[str, int]  # TRANSITIONS -> episodes
    edit_ratios: list[float] = field(repr=False)  # every consecutive pair, for the histogram


def row_diagnostics(samples: list[Episode], turns: int | None = None) -> RowDiagnostics:
    episodes = [episode_diagnostics(e, turns) for e in samples]
    if not episodes:
        raise ValueError("no episodes")
    ratios = [r for e in episodes for r in e.edit_ratios]
    counts = {t: sum(e.transition == t for e in episodes) for t in TRANSITIONS}
    return RowDiagnostics(len(episodes), sum(e.answer_changed for e in episodes) / len(episodes),
                          float(statistics.median(ratios)), counts, ratios)


def paired_mcnemar_p(base: list[Episode], other: list[Episode], attempt: int = 2) -> float:
    """Exact McNemar p of two methods' verdicts at `attempt` on the same problems (same order)."""
    if [e.item.id for e in base] != [e.item.id for e in other]:
        raise ValueError("paired test needs the same problems in the same order")
    a = [e.correct[attempt - 1] for e in base]
    b = [e.correct[attempt - 1] for e in other]
    return mcnemar_exact_p(sum(not x and y for x, y in zip(a, b)), sum(x and not y for x, y in zip(a, b)))


@dataclass(frozen=True)
class Compute:
    n: int
    generated_tokens: int  # every step's completion tokens (attempts and feedback)
    prefill_tokens: int  # every step's prompt tokens (a carried attempt costs none)
    seconds: float  # the steps' shares of their generation rounds, summed
    parameters: int | None  # N; None: unknown (FLOPs left blank)
    training_tokens: TrainingTokens | None = None  # a trained row: what its training run's passes processed

    @property
    def inference_flops(self) -> float | None:
        return None if self.parameters is None else 2.0 * self.parameters * (self.generated_tokens + self.prefill_tokens)

    @property
    def training_flops(self) -> float | None:
        if self.parameters is None or self.training_tokens is None:
            return None
        return self.training_tokens.flops(self.parameters)


def compute(episodes: list[Episode], parameters: int | None, turns: int | None = None,
            training_tokens: TrainingTokens | None = None) -> Compute:
    """Compute spent on these episodes' first `turns` attempts (and the feedback steps between them)."""
    steps = [step for e in episodes for step in e.steps_within(turns)]
    return Compute(len(episodes), sum(s.completion_tokens for s in steps), sum(s.prompt_tokens for s in steps),
                   sum(s.seconds for s in steps), parameters, training_tokens)


@dataclass(frozen=True)
class TrainingTokens:
    """Tokens a training run's update passes processed, summed over its log.jsonl (written per step by
    RLSteps.passes and SFTSteps.passes, harness/training/steps.py): whole sequences, prompt included,
    padding left out. An RL episode is [x, y1, instruction, y2] (plus RRR's reflection and its request); an SFT example is its
    prompt and target. Rollout sampling (inference) is not counted here."""

    policy: float = 0.0  # through the policy's forward and backward pass: 6·N FLOPs each
    reference: float = 0.0  # through the reference's forward pass (RL): 2·N each
    critic: float = 0.0  # through a critic on the policy's base model (a2c2stage), forward and backward: 6·N each
    own_critic_flops: float = 0.0  # a critic loaded as its own model: 6·N_critic·its tokens, summed per step
    legacy: float = 0.0  # steps logged before these counts: generated and SFT target tokens only, 6·N each

    def flops(self, parameters: int) -> float:
        """6·N·(policy + critic) + 2·N·reference (+ a separate critic's own FLOPs)."""
        n = float(parameters)
        return 6.0 * n * (self.policy + self.critic + self.legacy) + 2.0 * n * self.reference + self.own_critic_flops


def training_tokens(log: Iterable[dict[str, Any]]) -> TrainingTokens:
    """What a training run's passes processed, summed over its log. A step logged before `policy_tokens`
    existed counts its generated (`tokens`) and SFT target (`sft_tokens`) tokens, as the estimate then did."""
    policy = reference = critic = own_critic = legacy = 0.0
    for r in log:
        if "policy_tokens" not in r:
            legacy += r.get("tokens", 0.0) + r.get("sft_tokens", 0.0)
            continue
        policy += r["policy_tokens"]
        reference += r.get("reference_tokens", 0.0)
        if "critic_parameters" in r:
            own_critic += 6.0 * r["critic_parameters"] * r.get("critic_tokens", 0.0)
        else:
            critic += r.get("critic_tokens", 0.0)
    return TrainingTokens(policy, reference, critic, own_critic, legacy)


def budget_note(tokens_per_problem: dict[str, float]) -> str:
    """One line when the rows' generated tokens per problem differ by more than BUDGET_SPREAD, else ''."""
    if len(tokens_per_problem) < 2:
        return ""
    low, high = min(tokens_per_problem.values()), max(tokens_per_problem.values())
    if high <= low * (1 + BUDGET_SPREAD):
        return ""
    least = min(tokens_per_problem, key=tokens_per_problem.get)
    most = max(tokens_per_problem, key=tokens_per_problem.get)
    return (f"Budget: generated tokens per problem differ by more than {BUDGET_SPREAD:.0%} between rows "
            f"({least} {low:.0f}, {most} {high:.0f}); compare the rows at equal compute (tokens, FLOPs), "
            f"not only by accuracy.")
