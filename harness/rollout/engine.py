"""The decode engine: continuous batching on a transformers `DynamicCache`, with prefix reuse.

Rows live in one batch cache: row i's keys and values fill `length_i` of its columns, the others are
padding (masked). Every step feeds each row its last sampled token at its own position; a row that
ends (EOS or max_new_tokens) leaves the batch at once and queued jobs take the free places,
prefilled together in one left-padded forward: no step decodes a finished row, and no batch waits
for its longest row. A prompt that starts with a stream the engine already ran (attempt k+1 =
attempt k's prompt + sampled tokens + the correction instruction) prefills only the new tail on top
of that stream's cached keys and values.

Each sample has its own `torch.Generator`, seeded by the caller per request: what a row samples does
not depend on which other rows share its batch.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

from harness.rollout.kvcache import KVStash, RowCache
from harness.sampling import torch_generator

PREFILL_TOKENS = 4096  # prompt tokens admitted into one prefill forward (activations grow with it)


@dataclass
class Job:
    """One prompt to answer `len(seeds)` times (one sample per seed)."""

    key: Any  # the caller's handle, passed back with the result
    prompt_ids: list[int]
    seeds: list[int]
    stop: Callable[[list[int]], bool] | None = None  # ends a sample early (e.g. at a stop string)


@dataclass
class JobResult:
    job: Job
    tokens: list[list[int]]  # per sample: the sampled tokens, a final EOS included when it stopped there
    seconds: float  # this job's share of the engine's compute time
    reused: int  # prompt tokens whose keys and values came from the stash


@dataclass
class _Row:
    job: Job
    sample: int
    tokens: list[int]  # sampled so far; the last one is not in the cache yet
    length: int  # tokens in the cache (its positions are 0..length-1)
    generator: torch.Generator | None


@dataclass
class _Pending:
    """A job whose samples are still decoding."""

    tokens: list[list[int] | None]
    seconds: float = 0.0
    reused: int = 0
    left: int = 0


@dataclass
class EngineStats:
    forward_s: float = 0.0
    prefill_tokens: int = 0
    reused_tokens: int = 0
    decode_steps: int = 0
    generated_tokens: int = 0
    rows_per_step: list[int] = field(default_factory=list, repr=False)


class DecodeEngine:
    def __init__(self, model, eos_ids: Sequence[int], max_rows: int, stash_bytes: int = 0):
        self.model = model
        self.eos_ids = set(eos_ids)
        self.max_rows = max(1, max_rows)
        self.stash_bytes = stash_bytes
        self.stats = EngineStats()
        # transformers renamed `past_key_values` to `cache` (5.2x); a PEFT wrapper passes either through.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    # ---- public ---------------------------------------------------------------------------
    def run(
        self,
        jobs: Sequence[Job],
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        on_done: Callable[[JobResult], Sequence[Job]] | None = None,
    ) -> list[JobResult]:
        """Answer every job; `on_done(result)` may return follow-up jobs, which go to the front of the
        queue (an episode under way finishes before new ones start: its stashed prefix is fresh and the
        stash stays small). Results come back in completion order (each carries its job)."""
        queue = deque(jobs)
        stash = KVStash(self.stash_bytes)
        batch = _Batch()
        pending: dict[int, _Pending] = {}
        results: list[JobResult] = []
        sampler = _Sampler(temperature, top_p)

        def finish(row: _Row, cache: RowCache | None) -> None:
            state = pending[id(row.job)]
            state.tokens[row.sample] = row.tokens
            state.left -= 1
            self.stats.generated_tokens += len(row.tokens)
            if cache is not None and self.stash_bytes:
                stash.put(tuple(row.job.prompt_ids) + tuple(row.tokens[:-1]), cache)
            if state.left == 0:
                del pending[id(row.job)]
                result = JobResult(row.job, state.tokens, state.seconds, state.reused)  # type: ignore[arg-type]
                results.append(result)
                if on_done is not None:
                    queue.extendleft(reversed(list(on_done(result))))

        with torch.inference_mode():
            while queue or batch.rows:
                admit: list[Job] = []
                rows, tokens = len(batch.rows), 0
                while queue and ((rows + len(queue[0].seeds) <= self.max_rows and tokens < PREFILL_TOKENS)
                                 or not (admit or batch.rows)):
                    admit.append(queue.popleft())
                    rows, tokens = rows + len(admit[-1].seeds), tokens + len(admit[-1].prompt_ids)
                if admit:
                    block = self._prefill(admit, stash, sampler, pending)
                    done = [i for i, row in enumerate(block.rows) if self._done(row, max_new_tokens)]
                    for i in done:
                        finish(block.rows[i], block.row_cache(i) if self.stash_bytes else None)
                    block.drop(done)
                    batch.merge(block)
                if not batch.rows:
                    continue
                start = time.perf_counter()
                logits = self._decode(batch)
                self._charge(pending, batch.rows, time.perf_counter() - start)
                nxt = sampler(logits, [r.generator for r in batch.rows])
                ended = []
                for i, (row, token) in enumerate(zip(batch.rows, nxt)):
                    row.length += 1
                    row.tokens.append(token)
                    if self._done(row, max_new_tokens):
                        ended.append(i)
                if ended:
                    caches = [batch.row_cache(i) if self.stash_bytes else None for i in ended]
                    rows = [batch.rows[i] for i in ended]
                    batch.drop(ended)
                    for row, cache in zip(rows, caches):
                        finish(row, cache)
        return results

    # ---- steps ------------------------------------------------------------------------------
    def _done(self, row: _Row, max_new_tokens: int) -> bool:
        return row.tokens[-1] in self.eos_ids or len(row.tokens) >= max_new_tokens or \
            (row.job.stop is not None and row.job.stop(row.tokens))

    def _prefill(self, jobs: list[Job], stash: KVStash, sampler, pending) -> "_Batch":
        """Run the jobs' prompts in one left-padded forward, each only past its longest stashed prefix,
        and sample every first token. Row i's columns: [padding | its prefix | padding | its tail]."""
        device = self.model.device
        found = [stash.longest_prefix(job.prompt_ids) if self.stash_bytes else (0, None) for job in jobs]
        past = max(r for r, _ in found)
        width = max(len(job.prompt_ids) - r for job, (r, _) in zip(jobs, found))
        ids = torch.zeros(len(jobs), width, dtype=torch.long)
        positions = torch.zeros(len(jobs), width, dtype=torch.long)
        mask = torch.zeros(len(jobs), past + width, dtype=torch.long)
        for i, (job, (r, _)) in enumerate(zip(jobs, found)):
            q = len(job.prompt_ids) - r
            ids[i, width - q :] = torch.tensor(job.prompt_ids[r:])
            positions[i, width - q :] = torch.arange(r, r + q)
            mask[i, past - r : past] = 1
            mask[i, past + width - q :] = 1
        if past:
            shaped = next(prefix for _, prefix in found if prefix is not None)
            layers = []
            for layer, (k0, v0) in enumerate(shaped):
                keys = k0.new_zeros(len(jobs), k0.shape[1], past, k0.shape[3])
                values = v0.new_zeros(len(jobs), v0.shape[1], past, v0.shape[3])
                for i, (r, prefix) in enumerate(found):
                    if r:
                        keys[i, :, past - r :] = prefix[layer][0][0]
                        values[i, :, past - r :] = prefix[layer][1][0]
                layers.append((keys, values))
            cache = DynamicCache(layers)
        else:
            cache = DynamicCache(config=self.model.config)
        start = time.perf_counter()
        out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                         **{self._cache_arg: cache}, use_cache=True, logits_to_keep=1)
        seconds = time.perf_counter() - start
        tails = [len(job.prompt_ids) - r for job, (r, _) in zip(jobs, found)]
        self.stats.forward_s += seconds
        self.stats.prefill_tokens += sum(tails)
        self.stats.reused_tokens += sum(r for r, _ in found)
        # One row per sample; a job's samples share its prefill.
        index = [i for i, job in enumerate(jobs) for _ in job.seeds]
        rows = []
        logits = out.logits[index, -1]
        generators = [sampler.generator(seed, device) for job in jobs for seed in job.seeds]
        first = sampler(logits, generators)
        for (i, job), (r, _), tail in zip(enumerate(jobs), found, tails):
            pending[id(job)] = _Pending([None] * len(job.seeds), seconds * tail / sum(tails), r, len(job.seeds))
        for n, i in enumerate(index):
            job = jobs[i]
            rows.append(_Row(job, n - index.index(i), [first[n]], len(job.prompt_ids), generators[n]))
        block = _Batch()
        index_t = torch.tensor(index)
        block.set(rows, [(layer.keys[index_t.to(layer.keys.device)], layer.values[index_t.to(layer.values.device)])
                         for layer in cache.layers], mask[index_t])
        return block

    def _decode(self, batch: "_Batch") -> torch.Tensor:
        device = self.model.device
        rows = batch.rows
        batch.mask = torch.cat([batch.mask, torch.ones(len(rows), 1, dtype=torch.long)], dim=1)
        out = self.model(
            input_ids=torch.tensor([[r.tokens[-1]] for r in rows], device=device),
            attention_mask=batch.mask.to(device),
            position_ids=torch.tensor([[r.length] for r in rows], device=device),
            **{self._cache_arg: batch.cache}, use_cache=True,
        )
        self.stats.decode_steps += 1
        self.stats.rows_per_step.append(len(rows))
        return out.logits[:, -1]

    def _charge(self, pending: dict[int, _Pending], rows: list[_Row], seconds: float) -> None:
        self.stats.forward_s += seconds
        for row in rows:
            pending[id(row.job)].seconds += seconds / len(rows)


class _Batch:
    """The running rows and their shared cache; a row's columns may hold padding anywhere (masked)."""

    def __init__(self):
        self.rows: list[_Row] = []
        self.cache = None  # DynamicCache over [rows, kv_heads, width, head_dim]
        self.mask = torch.zeros(0, 0, dtype=torch.long)  # [rows, width]: 1 where a row has a token

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def set(self, rows: list[_Row], layers: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> None:
        self.rows = rows
        self.cache = DynamicCache()
        self.cache.layers = [_GrowingLayer(k, v) for k, v in layers]
        self.mask = mask

    def merge(self, other: "_Batch") -> None:
        """Append another batch's rows, padding whichever is narrower on the left."""
        if not other.rows:
            return
        if not self.rows:
            self.set(other.rows, [(layer.keys, layer.values) for layer in other.cache.layers], other.mask)
            return
        width = max(self.width, other.width)
        grow, pad = width - self.width, width - other.width
        self.mask = torch.cat([F.pad(self.mask, (grow, 0)), F.pad(other.mask, (pad, 0))])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.reset(torch.cat([_pad_left(mine.keys, grow), _pad_left(theirs.keys, pad)]),
                       torch.cat([_pad_left(mine.values, grow), _pad_left(theirs.values, pad)]))
        self.rows = self.rows + other.rows

    def row_cache(self, i: int) -> RowCache:
        """Row i's keys and values at its own columns only (its padding left out)."""
        columns = self.mask[i].nonzero().squeeze(1)
        return tuple((layer.keys[i : i + 1, :, columns.to(layer.keys.device)],
                      layer.values[i : i + 1, :, columns.to(layer.values.device)]) for layer in self.cache.layers)

    def drop(self, indices: list[int]) -> None:
        if not indices:
            return
        gone = set(indices)
        keep = [i for i in range(len(self.rows)) if i not in gone]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, torch.zeros(0, 0, dtype=torch.long)
            return
        index = torch.tensor(keep)
        self.mask = self.mask[index]
        # Columns that are padding in every remaining row are dropped too.
        first = int(self.mask.any(0).nonzero()[0])
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.reset(layer.keys[index.to(layer.keys.device), :, first:],
                        layer.values[index.to(layer.values.device), :, first:])


class _GrowingLayer(DynamicLayer):
    """A DynamicLayer that writes each step's keys and values into spare columns: DynamicLayer
    concatenates, which copies the whole batch cache at every decode step."""

    SPARE = 128

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.reset(keys, values)

    def reset(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        b, h, n, d = keys.shape
        self._keys = keys.new_empty(b, h, n + self.SPARE, d)
        self._values = values.new_empty(b, h, n + self.SPARE, values.shape[-1])
        self._keys[:, :, :n] = keys
        self._values[:, :, :n] = values
        self._length = n
        self.keys, self.values = self._keys[:, :, :n], self._values[:, :, :n]
        self.device, self.is_initialized = keys.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n, m = self._length, key_states.shape[-2]
        if n + m > self._keys.shape[2]:
            self.reset(self.keys, self.values)
        self._keys[:, :, n : n + m] = key_states
        self._values[:, :, n : n + m] = value_states
        self._length = n + m
        self.keys, self.values = self._keys[:, :, : n + m], self._values[:, :, : n + m]
        return self.keys, self.values


def _pad_left(t: torch.Tensor, n: int) -> torch.Tensor:
    return F.pad(t, (0, 0, n, 0)) if n else t


class _Sampler:
    """Greedy (temperature 0) or temperature + top-p sampling, each row from its own generator."""

    def __init__(self, temperature: float, top_p: float):
        self.temperature = temperature
        self.top_p = top_p

    def generator(self, seed: int, device) -> torch.Generator | None:
        if self.temperature <= 0:
            return None
        return torch_generator(seed, device)

    def __call__(self, logits: torch.Tensor, generators: list[torch.Generator | None]) -> list[int]:
        if self.temperature <= 0:
            return logits.argmax(-1).tolist()
        scores = logits.float() / self.temperature
        if self.top_p < 1.0:  # as transformers' TopPLogitsWarper: drop the tail holding 1 - top_p of the mass
            sorted_scores, order = torch.sort(scores, descending=False)
            cumulative = sorted_scores.softmax(-1).cumsum(-1)
            remove = cumulative <= 1 - self.top_p
            remove[..., -1] = False
            scores = scores.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
        probs = scores.softmax(-1)
        return [int(torch.multinomial(p, 1, generator=g)) for p, g in zip(probs, generators)]
