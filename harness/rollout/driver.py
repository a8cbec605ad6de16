"""The K-attempt driver: ask the method for each next request, generate all of them in one batched
round, grade the attempts, repeat until every episode holds K attempts."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Sequence

from harness.grading import GradingPool
from harness.method import Method, Request
from harness.rollout.episode import Episode, Step
from harness.rollout.generator import Generator, SamplingParams
from harness.task import Item, Task


def run_episodes(
    task: Task,
    method: Method,
    items: Sequence[Item],
    generator: Generator,
    params: SamplingParams,
    turns: int,
    pool: GradingPool,
    on_tokens: Callable[[int], None] | None = None,
    episodes: list[Episode] | None = None,
) -> list[Episode]:
    """Episodes of `turns` attempts for `items`; or, given `episodes` (items then ignored), continue those
    from their last step (e.g. G reflections on one failed first attempt, each in its own copy)."""
    if episodes is None:
        episodes = [Episode(item) for item in items]
        pending: dict[int, Request] = {i: method.first_request(task, item) for i, item in enumerate(items)}
    else:
        pending = {}
        for i, episode in enumerate(episodes):
            if len(episode.attempts) < turns:
                request = method.next_request(task, episode.item, episode)
                if request is None:
                    _carry(episode, turns)
                else:
                    pending[i] = request
    round_index = 0
    while pending:
        order = list(pending)
        prompt_ids = [_continuation(generator, episodes[i], pending[i]) for i in order]
        start = time.perf_counter()
        # Each round draws fresh randomness: attempt 2 must not reuse attempt 1's random numbers.
        round_params = replace(params, n=1, seed=params.seed + 7919 * round_index)
        completions = generator.generate([pending[i].messages for i in order], round_params, on_tokens, prompt_ids)
        round_index += 1
        share = (time.perf_counter() - start) / len(order)
        graded: list[int] = []
        for i, (completion,) in zip(order, completions):
            request = pending[i]
            episodes[i].steps.append(Step(request.kind, request.messages, completion.text, completion.prompt_tokens,
                                          completion.completion_tokens, completion.finished, share,
                                          prompt_ids=completion.prompt_ids, token_ids=completion.token_ids))
            if request.kind == "attempt":
                graded.append(i)
        grades = pool.grade(task, [episodes[i].item for i in graded], [episodes[i].steps[-1].text for i in graded])
        for i, grade in zip(graded, grades):
            episodes[i].steps[-1].grade = grade
        pending = {}
        for i in order:
            episode = episodes[i]
            if len(episode.attempts) >= turns:
                continue
            request = method.next_request(task, episode.item, episode)
            if request is None:
                _carry(episode, turns)
            else:
                pending[i] = request
    return episodes


def _carry(episode: Episode, turns: int) -> None:
    """The method is satisfied: its last attempt stands for the remaining turns."""
    last = episode.attempts[-1]
    while len(episode.attempts) < turns:
        episode.steps.append(replace(last, prompt_tokens=0, completion_tokens=0, seconds=0.0, carried=True))


def _continuation(generator: Generator, episode: Episode, request: Request) -> list[int] | None:
    """Continue the previous step's exact token stream when the request extends its conversation."""
    if not episode.steps:
        return None
    last = episode.steps[-1]
    return generator.continuation(last.messages, last.completion(), request.messages)
