"""The K-attempt driver: ask the method for each episode's next request, generate, grade the attempts,
repeat until every episode holds K attempts.

With a streaming generator (the decode engine) an episode's next request joins the running batch as
soon as its previous step is graded; with any other `Generator` all pending requests of a round go out
in one batched call."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Sequence

from harness.grading import GradingPool
from harness.method import Method, Request
from harness.rollout.episode import Episode, Step
from harness.rollout.generator import Generator
from harness.sampling import SamplingParams, seed_for
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
    on_episode: Callable[[Episode], None] | None = None,
) -> list[Episode]:
    """Episodes of `turns` attempts for `items`; or, given `episodes` (items then ignored), continue those
    from their last step (e.g. G reflections on one failed first attempt, each in its own copy).
    `on_episode(episode)` is called as each episode completes (an evaluation stores it there, so a
    killed run loses at most the episodes under way)."""
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
    finished = on_episode or (lambda _: None)
    for i, episode in enumerate(episodes):
        if i not in pending:
            finished(episode)  # already complete when given
    if getattr(generator, "stream", None) is not None:
        return _stream(task, method, episodes, pending, generator, params, turns, pool, on_tokens, finished)
    round_index = 0
    while pending:
        order = list(pending)
        prompt_ids = [_continuation(generator, episodes[i], pending[i]) for i in order]
        start = time.perf_counter()
        # Each round draws fresh randomness: attempt 2 must not reuse attempt 1's random numbers.
        round_params = replace(params, n=1, seed=seed_for(params.seed, "round", round_index))
        completions = generator.generate([pending[i].messages for i in order], round_params, on_tokens, prompt_ids)
        round_index += 1
        share = (time.perf_counter() - start) / len(order)
        graded: list[int] = []
        for i, (completion,) in zip(order, completions):
            request = pending[i]
            episodes[i].steps.append(Step(request.kind, request.messages, completion.text, completion.prompt_tokens,
                                          completion.completion_tokens, completion.finished, share,
                                          prompt_ids=completion.prompt_ids, token_ids=completion.token_ids,
                                          engine_logprobs=completion.engine_logprobs))
            if request.kind == "attempt":
                graded.append(i)
        grades = pool.grade(task, [episodes[i].item for i in graded], [episodes[i].steps[-1].text for i in graded])
        for i, grade in zip(graded, grades):
            episodes[i].steps[-1].grade = grade
        pending = {}
        for i in order:
            episode = episodes[i]
            request = method.next_request(task, episode.item, episode) if len(episode.attempts) < turns else None
            if request is not None:
                pending[i] = request
                continue
            _carry(episode, turns)
            finished(episode)
    return episodes


def _stream(task, method, episodes, pending, generator, params, turns, pool, on_tokens, finished) -> list[Episode]:
    """Each episode runs its own chain of requests through the engine; they never wait for each other."""
    from harness.rollout.engine import Job

    # Seeds name the problem, its copy among repeats in this call and the step: reruns sample the same
    # text whatever the batch size or the order requests finish in.
    copies: dict[str, int] = {}
    occurrence = []
    for episode in episodes:
        occurrence.append(copies.get(episode.item.id, 0))
        copies[episode.item.id] = occurrence[-1] + 1
    requests: dict[int, Request] = dict(pending)

    def job(i: int) -> Job:
        episode, request = episodes[i], requests[i]
        ids = _continuation(generator, episode, request) or generator.encode(request.messages)
        return Job(i, ids, [seed_for(params.seed, episode.item.id, occurrence[i], len(episode.steps))])

    def done(i: int, completions, seconds: float) -> list[Job]:
        (completion,) = completions
        request, episode = requests.pop(i), episodes[i]
        episode.steps.append(Step(request.kind, request.messages, completion.text, completion.prompt_tokens,
                                  completion.completion_tokens, completion.finished, seconds,
                                  prompt_ids=completion.prompt_ids, token_ids=completion.token_ids,
                                  engine_logprobs=completion.engine_logprobs))
        if request.kind == "attempt":
            (episode.steps[-1].grade,) = pool.grade(task, [episode.item], [completion.text])
        if on_tokens is not None:
            on_tokens(completion.completion_tokens)
        nxt = method.next_request(task, episode.item, episode) if len(episode.attempts) < turns else None
        if nxt is None:
            _carry(episode, turns)
            finished(episode)
            return []
        requests[i] = nxt
        return [job(i)]

    generator.stream([job(i) for i in pending], replace(params, n=1), done)
    return episodes


def _carry(episode: Episode, turns: int) -> None:
    """The method is satisfied: its last attempt stands for the remaining turns (if any remain)."""
    last = episode.attempts[-1]
    while len(episode.attempts) < turns:
        episode.steps.append(replace(last, prompt_tokens=0, completion_tokens=0, seconds=0.0, carried=True))


def _continuation(generator: Generator, episode: Episode, request: Request) -> list[int] | None:
    """Continue the exact token stream of the latest step whose conversation the request extends (the
    previous step; for Self-Refine's refinement, the attempt before the feedback)."""
    for step in reversed(episode.steps):
        n = len(step.messages)
        if request.messages[:n] == step.messages and len(request.messages) > n:
            return generator.continuation(step.messages, step.completion(), request.messages)
    return None
