"""Generation backends. A backend turns chats into completions; the transformers one batches them.

The `Generator` protocol is the seam for other backends (vLLM on GPUs): anything with
`generate(chats, params) -> list[list[Completion]]` plugs into the rollout driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from harness.sampling import SamplingParams, seed_for, torch_seeded
from harness.task import Message


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finished: bool  # stopped at EOS (False: cut at max_new_tokens)
    token_ids: tuple[int, ...] = ()  # the sampled tokens, EOS excluded
    prompt_ids: tuple[int, ...] = ()
    engine_logprobs: tuple[float, ...] = ()  # the backend's log-prob of each sampled token, where asked for (vLLM)


class Generator(Protocol):
    def generate(
        self,
        chats: Sequence[list[Message]],
        params: SamplingParams,
        on_tokens: Callable[[int], None] | None = None,
        prompt_ids: Sequence[list[int] | None] | None = None,
    ) -> list[list[Completion]]: ...

    def continuation(self, messages: list[Message], completion: Completion, next_messages: list[Message]) -> list[int] | None: ...


def eos_set(config_eos: int | Sequence[int] | None, tokenizer) -> list[int]:
    """Every token that ends a turn: a generation config's EOS id(s), then the tokenizer's."""
    ids = [config_eos] if isinstance(config_eos, int) else list(config_eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


class HFGenerator:
    """Batched `model.generate` with left padding, prompts sorted by length so batches pad little."""

    def __init__(self, model, tokenizer, batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def encode(self, chat: list[Message]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)

    def encode_all(self, chats: Sequence[list[Message]], prompt_ids: Sequence[list[int] | None] | None) -> list[list[int]]:
        """Each chat's prompt ids: the given token stream (a continuation) where there is one, else the template's."""
        given = prompt_ids or [None] * len(chats)
        return [list(ids) if ids is not None else self.encode(chat) for chat, ids in zip(chats, given)]

    def render(self, chat: list[Message]) -> str:
        return self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)

    def continuation(self, messages: list[Message], completion: Completion, next_messages: list[Message]) -> list[int] | None:
        """Token ids for `next_messages` when it extends `messages` with the completion as the assistant turn.

        The ids are the earlier prompt, the tokens actually sampled, then the template's text after
        them: so attempt 2 is conditioned on exactly what attempt 1 produced (re-tokenizing its text
        can give other tokens), and training sees the same sequence. None when the template does not
        simply append (the caller then encodes the messages from scratch).
        """
        n = len(messages)
        if not completion.prompt_ids:  # e.g. a step read back from a store: no token stream to continue
            return None
        if next_messages[:n] != messages or len(next_messages) <= n or \
                next_messages[n] != {"role": "assistant", "content": completion.text}:
            return None
        head = self.render(messages) + completion.text
        full = self.render(next_messages)
        if not full.startswith(head):
            return None
        tail = self.tokenizer(full[len(head):], add_special_tokens=False)["input_ids"]
        return [*completion.prompt_ids, *completion.token_ids, *tail]

    def generate(
        self,
        chats: Sequence[list[Message]],
        params: SamplingParams,
        on_tokens: Callable[[int], None] | None = None,
        prompt_ids: Sequence[list[int] | None] | None = None,
    ) -> list[list[Completion]]:
        import torch

        encoded = self.encode_all(chats, prompt_ids)
        order = sorted(range(len(chats)), key=lambda i: len(encoded[i]), reverse=True)
        results: list[list[Completion] | None] = [None] * len(chats)
        eos_ids = self.eos_ids()
        pad_id = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                attention[row, width - len(encoded[i]) :] = 1
            # One seed per batch position: reruns with the same inputs and batch size sample the same text
            # (`generate` draws from the global RNG for the whole batch, so a row's text depends on its batch:
            # the plain baseline as a plain script runs it; the engine seeds each request instead).
            with torch_seeded(seed_for(params.seed, "batch", start)), torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids.to(self.model.device),
                    attention_mask=attention.to(self.model.device),
                    generation_config=self._generation_config(params, eos_ids, pad_id),
                )
            new_tokens = out[:, width:].tolist()
            for row, i in enumerate(batch):
                completions = []
                for k in range(params.n):
                    completions.append(self._completion(new_tokens[row * params.n + k], encoded[i], eos_ids))
                results[i] = completions
                if on_tokens is not None:
                    on_tokens(sum(c.completion_tokens for c in completions))
        return results  # type: ignore[return-value]

    @staticmethod
    def _generation_config(params: SamplingParams, eos_ids: list[int], pad_id: int):
        """Exactly the requested sampling: a fresh config, so a checkpoint's own generation defaults
        (Qwen ships top_k 20, repetition_penalty 1.05) never leak into a comparison."""
        from transformers import GenerationConfig

        sampled = params.temperature > 0
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens, num_return_sequences=params.n, do_sample=sampled,
            temperature=params.temperature if sampled else None, top_p=params.top_p if sampled else None,
            top_k=0 if sampled else None, eos_token_id=eos_ids, pad_token_id=pad_id,
        )

    def eos_ids(self) -> list[int]:
        """Every token that ends a turn: the model's EOS ids and the tokenizer's."""
        return eos_set(self.model.generation_config.eos_token_id, self.tokenizer)

    def model_record(self) -> dict[str, str]:
        """What a manifest records of the weights this backend runs beyond the loaded model's own record:
        nothing here (it runs the loaded model); llama.cpp names its GGUF."""
        return {}

    def _completion(self, tokens: list[int], prompt: list[int], eos_ids: list[int]) -> Completion:
        end = next((j for j, t in enumerate(tokens) if t in eos_ids), None)
        kept = tokens[:end] if end is not None else tokens
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text, len(prompt), len(kept) + (1 if end is not None else 0), end is not None, tuple(kept),
                          tuple(prompt))


class StreamingGenerator(HFGenerator):
    """A generator whose backend runs `stream(jobs, params, on_done)` (the decode engine, vLLM): a batched
    `generate` is one stream of jobs with no follow-ups, each request seeded by its index and sample."""

    def generate(
        self,
        chats: Sequence[list[Message]],
        params: SamplingParams,
        on_tokens: Callable[[int], None] | None = None,
        prompt_ids: Sequence[list[int] | None] | None = None,
    ) -> list[list[Completion]]:
        from harness.rollout.engine import Job

        jobs = [Job(i, ids, [seed_for(params.seed, i, k) for k in range(params.n)])
                for i, ids in enumerate(self.encode_all(chats, prompt_ids))]
        results: list[list[Completion] | None] = [None] * len(chats)

        def done(i, completions, seconds):
            results[i] = completions
            if on_tokens is not None:
                on_tokens(sum(c.completion_tokens for c in completions))
            return []

        self.stream(jobs, params, done)
        return results  # type: ignore[return-value]


class EngineGenerator(StreamingGenerator):
    """The fast path (harness.rollout.engine): continuous batching, no decoding of finished rows, and
    prompts that extend an earlier stream of the same call prefill only their new tail.

    `batch_size` None: as many rows as memory allows (see `auto_batch_size`)."""

    def __init__(self, model, tokenizer, batch_size: int | None = None, stash_bytes: int | None = None):
        from harness.rollout.memory import auto_batch_size, stash_budget

        super().__init__(model, tokenizer, batch_size or auto_batch_size(model))
        self.stash_bytes = stash_budget(model) if stash_bytes is None else stash_bytes
        self.last_stats = None

    def stream(self, jobs, params: SamplingParams, on_done: Callable | None = None):
        """Run engine `Job`s; `on_done(key, completions, seconds)` may return follow-up jobs."""
        from harness.rollout.engine import DecodeEngine

        engine = DecodeEngine(self.model, self.eos_ids(), self.batch_size, self.stash_bytes)
        eos_ids = self.eos_ids()

        def done(result):
            completions = [self._completion(t, result.job.prompt_ids, eos_ids) for t in result.tokens]
            return on_done(result.job.key, completions, result.seconds) if on_done is not None else []

        results = engine.run(jobs, params.temperature, params.top_p, params.max_new_tokens, done)
        self.last_stats = engine.stats
        return results
