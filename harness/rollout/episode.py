"""Records of one problem's episode: every generation step, with the graded attempts among them. Every
reader of a run's samples (report, regrade, a resumed eval) gets them as `Episode`s (`read_episodes`).

Stored form (a line of samples.jsonl): a step whose conversation begins with an earlier step's
conversation and answer stores `"shares": [j, n]` (its first n messages are step j's messages followed
by step j's text as the assistant turn) and only the messages after them; `Episode.from_record`
rebuilds the whole conversation. Records without "shares" hold every message."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.rollout.generator import Completion
from harness.task import Grade, Item, Message

IN_MEMORY_ONLY = ("prompt_ids", "token_ids", "engine_logprobs")


@dataclass
class Step:
    kind: str  # "attempt" (graded) or an auxiliary kind such as "feedback"
    messages: list[Message]  # the conversation this step answered
    text: str
    prompt_tokens: int
    completion_tokens: int
    finished: bool  # stopped at EOS rather than at max_new_tokens
    seconds: float  # this step's share of its batched generation round
    grade: Grade | None = None
    carried: bool = False  # an attempt copied forward because the method stopped early
    # In memory only (not stored): the exact token streams, for training and token-level continuation.
    prompt_ids: tuple[int, ...] = field(default=(), repr=False)
    token_ids: tuple[int, ...] = field(default=(), repr=False)
    engine_logprobs: tuple[float, ...] = field(default=(), repr=False)  # an engine backend's, per sampled token

    def conversation(self) -> list[Message]:
        """The messages this step answered, then its answer as the assistant turn."""
        return self.messages + [{"role": "assistant", "content": self.text}]

    def completion(self) -> Completion:
        return Completion(self.text, self.prompt_tokens, self.completion_tokens, self.finished, self.token_ids,
                          self.prompt_ids)


@dataclass
class Episode:
    item: Item
    steps: list[Step] = field(default_factory=list)

    @property
    def attempts(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "attempt"]

    @property
    def correct(self) -> list[bool]:
        return [bool(s.grade and s.grade.correct) for s in self.attempts]

    @property
    def generated_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.steps)

    def attempts_within(self, turns: int | None) -> list[Step]:
        """The first `turns` attempts (all of them for None)."""
        return self.attempts[:turns] if turns else self.attempts

    def steps_within(self, turns: int | None) -> list[Step]:
        """The steps up to and including attempt `turns` (feedback before it included; all for None)."""
        kept, seen = [], 0
        for step in self.steps:
            if turns and seen >= turns:
                break
            kept.append(step)
            seen += step.kind == "attempt"
        return kept

    def to_record(self) -> dict[str, Any]:
        steps = []
        for k, step in enumerate(self.steps):
            stored = {key: v for key, v in asdict(step).items() if key not in IN_MEMORY_ONLY}
            shared = _longest_shared_prefix(step.messages, [s.conversation() for s in self.steps[:k]])
            if shared:
                stored["shares"], stored["messages"] = list(shared), step.messages[shared[1]:]
            steps.append(stored)
        return {
            "id": self.item.id,
            "question": self.item.question,
            "answer": self.item.answer,
            "meta": self.item.meta,
            "correct": self.correct,
            "generated_tokens": self.generated_tokens,
            "steps": steps,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Episode":
        """The episode a stored record holds (KeyError / TypeError / ValueError for what is not one:
        `episodes_of` says which line in one line)."""
        item = Item(record["id"], record["question"], record["answer"], record.get("meta", {}))
        steps: list[Step] = []
        for s in record["steps"]:
            s = dict(s)
            if "shares" in s:
                j, n = s.pop("shares")
                s["messages"] = steps[j].conversation()[:n] + s["messages"]
            s["grade"] = Grade(**s["grade"]) if s.get("grade") else None
            steps.append(Step(**s))
        return cls(item, steps)


def episodes_of(records: list[dict[str, Any]], where: object) -> list[Episode]:
    """Stored records as Episodes; a record that is not one (hand-edited, or written by something else)
    is refused in one line naming `where` (the run folder) and its id."""
    from harness.errors import HarnessError

    found = []
    for record in records:
        try:
            found.append(Episode.from_record(record))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise HarnessError(f"{where}: sample {record.get('id')!r} is not an episode record "
                               f"({type(exc).__name__}: {exc})") from None
    return found


def read_episodes(run_dir, ids: list[str] | None = None) -> list[Episode]:
    """A run's stored episodes (harness.store.RunStore reads its samples), in `ids` order when given."""
    from harness.store import RunStore

    return episodes_of(RunStore(run_dir).read_samples(ids), run_dir)


def _longest_shared_prefix(messages: list[Message], earlier: list[list[Message]]) -> tuple[int, int] | None:
    """(j, n): the first n messages are those of earlier step j's conversation (its answer included), n largest.
    A stored step keeps only the rest: later attempts repeat the system prompt, the problem and earlier
    answers, which made the prompts most of a samples.jsonl."""
    best = None
    for j, conversation in enumerate(earlier):
        n = 0
        while n < min(len(messages), len(conversation)) and messages[n] == conversation[n]:
            n += 1
        if n and (best is None or n > best[1]):
            best = (j, n)
    return best
