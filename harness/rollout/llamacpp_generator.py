"""The llama.cpp backend behind the `Generator` protocol: the same chat template, token ids, seeds and
EOS set as the transformers engine, on llama.cpp's CPU kernels (GGUF weights, f32 or quantized).

Many sequences decode in ONE llama.cpp context: every step is one batched `llama_decode` holding one
token per decoding sequence (each with its own seq_id, logits requested for it) plus prompt chunks of
newly admitted jobs, up to `n_batch` tokens. A finished sequence's place goes to the next queued job at
once; follow-up jobs (`on_done`'s return) go to the front of the queue.

The KV cache is split into one stream per sequence (llama.cpp's `kv_unified = false`, its default and
what `llama-server --parallel` uses): a token attends over its own sequence's cells only. A unified cache
shares one cell range among all sequences, and every token's attention then spans the cells of ALL of
them (masked): with 32 sequences of ~500 tokens that is more work than the model's matmuls, and it is
why the unified cache ran 2-turn episodes at 0.54x raw llama.cpp (measured, see the README).

Prefix reuse: finished sequences stay in the cache (their tokens: prompt + sampled, the final sampled
token excepted) until their stream is needed, oldest first. A new prompt that shares a prefix with a
held sequence (attempt k+1 = attempt k's prompt + sampled tokens + the correction instruction) takes
the finished sequence over (its cells past the shared prefix dropped), or, when the prefix belongs to
a sequence still decoding, copies that sequence's stream (`llama_memory_seq_cp`, then the tail
dropped); either way only the new tail is evaluated. A job's samples share one prompt
evaluation. Changing the adapter clears the cache: keys and values computed under another adapter are
never reused.

Sampling: each sample has its own sampler chain seeded by the caller (`seed_for`), so what it samples
does not depend on what shares its batch. Greedy is the argmax of the logits (first index on ties, as
torch); sampled is llama.cpp's temp(t) -> top_p(p) -> dist(seed) chain: temperature first, then top-p
on the tempered distribution, then a draw, the order of our HF sampler (llama.cpp's top-p keeps the
smallest prefix of the sorted tokens whose mass reaches p, the same set as transformers' TopP, which
drops the tail holding at most 1 - p). The random streams differ from torch's, so sampled text differs
from the hf backend's for the same seed; the distribution is the same.

llama_cpp is imported only when a generator is built (harness/rollout/llamacpp_lib.py).
"""

from __future__ import annotations

import ctypes
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.errors import HarnessError
from harness.rollout.generator import Completion, StreamingGenerator
from harness.rollout.llamacpp_lib import cpu_threads, load_llamacpp, model_params
from harness.sampling import SamplingParams, seed32

MAX_SEQ_IDS = 256  # llama.cpp's LLAMA_MAX_SEQ: seq ids of active and cached sequences together
DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED means "random": never pass it


@dataclass
class _Seq:
    """One sequence in the cache: `tokens` are evaluated (their cells hold positions 0..len-1)."""

    seq_id: int
    tokens: list[int]
    job: Any = None  # None: finished, held for reuse
    sample: int = 0
    pending: list[int] = field(default_factory=list)  # prompt tokens still to evaluate (lead of a job only)
    sampled: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sampler: Any = None  # llama_sampler_p (None: greedy)
    siblings: list["_Seq"] = field(default_factory=list)  # the job's other samples, waiting on this prefill


@dataclass
class _JobState:
    results: list
    left: int
    seconds: float = 0.0


class LlamaCppGenerator(StreamingGenerator):
    """`generate` and `stream` (engine `Job`s, follow-ups as each finishes) on a llama.cpp context.

    parallel: sequences decoding at once. n_ctx: KV cells in all (None: sized at the first stream to
    parallel x (longest prompt + 2 x max_new_tokens + 128), grown when a later job needs more).
    kv_type: "f16" (llama.cpp's default) or "f32" (bit-closer to a float32 transformers run).
    kv_unified: one cell range shared by all sequences instead of a stream each (slower; see above)."""

    def __init__(self, gguf_path: str | Path, tokenizer, eos_ids: Sequence[int], parallel: int = 16,
                 n_ctx: int | None = None, n_batch: int = 2048, n_threads: int | None = None, kv_type: str = "f16",
                 flash_attn: bool | None = None, kv_unified: bool = False):
        self._ll = ll = load_llamacpp()
        super().__init__(None, tokenizer, batch_size=parallel)
        self.gguf_path = str(gguf_path)
        if not Path(self.gguf_path).is_file():
            raise HarnessError(f"{self.gguf_path}: no such GGUF file")
        self._eos_ids = list(eos_ids)
        self.parallel = max(1, int(parallel))
        self.n_batch = max(int(n_batch), self.parallel)
        self.n_threads = n_threads or cpu_threads()
        if kv_type not in ("f16", "f32"):
            raise HarnessError(f"unknown kv_type {kv_type!r}; use f16 or f32")
        self.kv_type = kv_type
        self.flash_attn = flash_attn
        self.kv_unified = bool(kv_unified)
        # seq ids: any of llama.cpp's 256 in a unified cache; one per stream otherwise
        self.n_ids = MAX_SEQ_IDS if self.kv_unified else min(MAX_SEQ_IDS, self.parallel)
        self._fixed_ctx = n_ctx
        ll.llama_backend_init()
        self._model = ll.llama_model_load_from_file(self.gguf_path.encode(), model_params(ll))
        if not self._model:
            raise HarnessError(f"{self.gguf_path}: llama.cpp could not load this GGUF")
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_train = ll.llama_model_n_ctx_train(self._model)
        self._ctx = None
        self._mem = None
        self._batch = None
        self.n_ctx = 0
        self.n_ctx_seq = 0  # cells one sequence may hold
        self._adapter = None  # llama_adapter_lora_p of the current policy (None: the base model)
        self.policy_version = 0
        self._held: OrderedDict[int, _Seq] = OrderedDict()  # finished sequences, oldest first
        self.last_stats: dict[str, float] | None = None
        if n_ctx:
            self._make_context(int(n_ctx))

    # ---- lifetime ---------------------------------------------------------------------------
    def _make_context(self, n_ctx: int) -> None:
        ll = self._ll
        self._free_context()
        params = ll.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = self.n_batch
        params.n_ubatch = min(512, self.n_batch)
        params.n_seq_max = self.n_ids
        params.kv_unified = self.kv_unified
        params.n_threads = params.n_threads_batch = self.n_threads
        params.no_perf = True
        if self.flash_attn is not None:
            params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.flash_attn else ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if self.kv_type == "f32":
            params.type_k = params.type_v = ll.GGML_TYPE_F32
        ctx = ll.llama_init_from_model(self._model, params)
        if not ctx:
            raise HarnessError(f"llama.cpp could not create a context of {n_ctx} cells (memory?)")
        self._ctx, self.n_ctx, self.n_ctx_seq = ctx, ll.llama_n_ctx(ctx), ll.llama_n_ctx_seq(ctx)
        self._mem = ll.llama_get_memory(ctx)
        self._batch = ll.llama_batch_init(self.n_batch, 0, 1)
        self._held.clear()
        if self._adapter is not None:
            self._apply_adapter()

    def _free_context(self) -> None:
        ll = self._ll
        if self._batch is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            ll.llama_free(self._ctx)
            self._ctx, self._mem = None, None
        self._held.clear()

    def close(self) -> None:
        """Free the context, the adapter and the model (also done when the generator is collected)."""
        ll = getattr(self, "_ll", None)
        if ll is None:
            return
        self._free_context()
        if getattr(self, "_adapter", None) is not None:
            ll.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        if getattr(self, "_model", None):
            ll.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def eos_ids(self) -> list[int]:
        return list(self._eos_ids)

    def model_record(self) -> dict[str, str]:
        """What the manifest records of the weights llama.cpp runs: the GGUF's file name (converted ones
        carry their type and content hash in it) and llama.cpp's description (architecture, size, type)."""
        buffer = ctypes.create_string_buffer(256)
        self._ll.llama_model_desc(self._model, buffer, len(buffer))
        return {"gguf": Path(self.gguf_path).name, "gguf_type": buffer.value.decode(errors="replace")}

    # ---- adapters ---------------------------------------------------------------------------
    def set_adapter(self, path: str | Path | None, version: int) -> None:
        """Sample from the GGUF LoRA adapter in `path` (None: the base model) from now on, on the same
        base weights. The cache is cleared: nothing computed under another adapter is reused."""
        ll = self._ll
        new = None
        if path is not None:
            new = ll.llama_adapter_lora_init(self._model, str(path).encode())
            if not new:
                raise HarnessError(f"{path}: llama.cpp could not load this GGUF LoRA adapter")
        old, self._adapter = self._adapter, new
        if self._ctx is not None:
            self._apply_adapter()
            ll.llama_memory_clear(self._mem, True)
            self._held.clear()
        if old is not None:
            ll.llama_adapter_lora_free(old)
        self.policy_version = version

    def _apply_adapter(self) -> None:
        ll = self._ll
        if self._adapter is None:
            code = ll.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            adapters = (ll.llama_adapter_lora_p_ctypes * 1)(self._adapter)
            scales = (ctypes.c_float * 1)(1.0)
            code = ll.llama_set_adapters_lora(self._ctx, adapters, 1, scales)
        if code != 0:
            raise HarnessError(f"llama.cpp could not apply the LoRA adapter (code {code})")

    # ---- Generator (`generate` is StreamingGenerator's: one stream of jobs) --------------------
    def stream(self, jobs, params: SamplingParams, on_done: Callable | None = None, logprobs: bool = False):
        """Run engine `Job`s; `on_done(key, completions, seconds)` may return follow-up jobs, which go to
        the front of the queue and start as soon as there is room. `logprobs`: each completion's
        `engine_logprobs` holds the log-softmax of the raw logits at every sampled token."""
        ll = self._ll
        eos = set(self.eos_ids())
        eos_list = self.eos_ids()
        jobs = list(jobs)
        queue = deque(jobs)
        max_new = max(1, params.max_new_tokens)
        longest = max((len(j.prompt_ids) for j in jobs), default=1)
        want = self.parallel * self._per_seq(longest, max_new)
        if self._ctx is None or (not self._fixed_ctx and self.n_ctx < want):
            self._make_context(self._fixed_ctx or want)
        stats = {"requests": 0, "generated_tokens": 0, "prompt_tokens": 0, "cached_tokens": 0, "seconds": 0.0,
                 "decode_steps": 0}
        active: list[_Seq] = []  # sequences with a job: prefilling leads, then decoding samples
        states: dict[int, _JobState] = {}
        reserved = {"cells": 0}  # worst-case cells of the jobs under way
        free_ids = [i for i in range(self.n_ids - 1, -1, -1) if i not in self._held]
        sampled_mode = params.temperature > 0

        def need(job) -> int:
            return len(job.prompt_ids) + len(job.seeds) * max_new

        def fits(job) -> bool:
            """Room for the job's worst case: in its streams, or beside the jobs under way in a unified cache."""
            if self.kv_unified:
                return reserved["cells"] + need(job) <= self.n_ctx
            return len(job.prompt_ids) + max_new <= self.n_ctx_seq and len(job.seeds) <= self.n_ids

        def take_id() -> int:
            if not free_ids:
                self._evict_oldest(free_ids)
            return free_ids.pop()

        def sampler(seed: int):
            if not sampled_mode:
                return None
            chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(params.temperature))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(params.top_p, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed32(seed, reserved=DEFAULT_SEED)))
            return chain

        def admit(job) -> None:
            if job.prompt_ids is None or not len(job.prompt_ids):
                raise HarnessError("a llamacpp job needs a non-empty prompt")
            prompt = list(job.prompt_ids)
            src, reuse = self._longest_prefix(prompt, active)
            if src is not None and src.job is None:
                del self._held[src.seq_id]  # a finished sequence: take it over, its cells past the prefix dropped
                lead = _Seq(src.seq_id, prompt[:reuse])
            else:
                lead = _Seq(take_id(), prompt[:reuse])
                ll.llama_memory_seq_rm(self._mem, lead.seq_id, -1, -1)
                if reuse:  # across streams llama.cpp copies whole sequences only: copy, then drop the tail
                    ll.llama_memory_seq_cp(self._mem, src.seq_id, lead.seq_id, -1, -1)
            ll.llama_memory_seq_rm(self._mem, lead.seq_id, reuse, -1)
            lead.job, lead.pending, lead.sampler = job, prompt[reuse:], sampler(job.seeds[0])
            for k, seed in enumerate(job.seeds[1:], start=1):
                sib = _Seq(take_id(), [], job=job, sample=k, sampler=sampler(seed))
                ll.llama_memory_seq_rm(self._mem, sib.seq_id, -1, -1)
                lead.siblings.append(sib)
            states[id(job)] = _JobState([None] * len(job.seeds), len(job.seeds))
            reserved["cells"] += need(job)
            stats["requests"] += len(job.seeds)
            stats["prompt_tokens"] += len(prompt) * len(job.seeds)
            stats["cached_tokens"] += reuse
            active.append(lead)

        def finish(seq: _Seq) -> None:
            job = seq.job
            state = states[id(job)]
            tokens = list(seq.sampled)  # a final EOS included: `_completion` strips it as for the hf backend
            completion = self._completion(tokens, list(job.prompt_ids), eos_list)
            if logprobs:
                completion = replace(completion, engine_logprobs=tuple(seq.logprobs[: len(completion.token_ids)]))
            state.results[seq.sample] = completion
            state.left -= 1
            stats["generated_tokens"] += len(tokens)
            if seq.sampler is not None:
                ll.llama_sampler_free(seq.sampler)
            seq.job, seq.sampler, seq.sampled, seq.logprobs = None, None, [], []
            self._held[seq.seq_id] = seq  # keep its keys and values for a continuation
            if state.left == 0:
                del states[id(job)]
                reserved["cells"] -= need(job)
                if on_done is not None:
                    follow = list(on_done(job.key, state.results, state.seconds) or [])
                    queue.extendleft(reversed(follow))

        def done_after(seq: _Seq, token: int) -> bool:
            seq.sampled.append(token)
            return token in eos or len(seq.sampled) >= max_new or \
                (seq.job.stop is not None and seq.job.stop(seq.sampled))

        while queue or active:
            # Admit queued jobs while there are free places and room in the cache.
            while queue:
                job = queue[0]
                running = sum(1 + len(s.siblings) for s in active)
                room = fits(job)
                if active and (running + len(job.seeds) > self.parallel or not room):
                    break
                if not active and not room:
                    if self._fixed_ctx or len(job.seeds) > self.n_ids:
                        raise HarnessError(f"a prompt of {len(job.prompt_ids)} tokens with {max_new} new tokens "
                                           f"x {len(job.seeds)} samples does not fit n_ctx={self.n_ctx} "
                                           f"({self.n_ids} sequences)")
                    self._make_context(max(self.n_ctx * 2, self.parallel * self._per_seq(len(job.prompt_ids), max_new)))
                    free_ids[:] = list(range(self.n_ids - 1, -1, -1))
                admit(queue.popleft())
            # One batch: a token per decoding sequence, then prompt chunks up to n_batch.
            entries: list[tuple[_Seq, list[int], bool]] = []  # (sequence, tokens, whether it samples after)
            budget = self.n_batch
            for seq in active:
                if not seq.pending:
                    entries.append((seq, [seq.sampled[-1]], True))
                    budget -= 1
            for seq in active:
                if seq.pending and budget > 0:
                    chunk = seq.pending[:budget]
                    entries.append((seq, chunk, len(chunk) == len(seq.pending)))
                    budget -= len(chunk)
            if not entries:
                continue
            start = time.perf_counter()
            outputs = self._decode(entries, free_ids)
            spent = time.perf_counter() - start
            stats["seconds"] += spent
            stats["decode_steps"] += 1
            share = spent / sum(1 + len(s.siblings) for s, _, _ in entries)
            for seq, _, _ in entries:
                states[id(seq.job)].seconds += share * (1 + len(seq.siblings))
            ended: list[_Seq] = []
            for (seq, chunk, samples), index in zip(entries, outputs):
                if seq.pending:  # a prompt chunk
                    seq.tokens.extend(chunk)
                    del seq.pending[: len(chunk)]
                else:
                    seq.tokens.append(chunk[0])
                if not samples:
                    continue
                starting = [seq] + seq.siblings
                for sib in seq.siblings:  # the job's other samples share the prompt's cells
                    ll.llama_memory_seq_cp(self._mem, seq.seq_id, sib.seq_id, -1, -1)
                    sib.tokens = list(seq.tokens)
                seq.siblings = []
                if len(starting) > 1:
                    active.extend(starting[1:])
                for s in starting:
                    token = self._sample(s, index, logprobs)
                    if done_after(s, token):
                        ended.append(s)
            if ended:
                gone = {id(s) for s in ended}
                active[:] = [s for s in active if id(s) not in gone]
                for s in ended:
                    finish(s)
        self.last_stats = stats
        return []

    # ---- internals ----------------------------------------------------------------------------
    def _per_seq(self, longest: int, max_new: int) -> int:
        per = longest + 2 * max_new + 128
        per = -(-per // 256) * 256
        return min(per, self.n_ctx_train) if self.n_ctx_train > 0 else per

    def _longest_prefix(self, prompt: list[int], active: list[_Seq]) -> tuple[_Seq | None, int]:
        """The held or running sequence sharing the longest evaluated prefix with `prompt` (at most
        len(prompt) - 1 tokens: the last prompt token is always evaluated, for its logits)."""
        best, best_n = None, 0
        limit = len(prompt) - 1
        for seq in list(self._held.values()) + [s for s in active if s.tokens]:
            n = _common_prefix(seq.tokens, prompt, limit)
            if n > best_n:  # held sequences come first: on a tie the one that can be taken over wins
                best, best_n = seq, n
        return best, best_n

    def _evict_oldest(self, free_ids: list[int]) -> bool:
        if not self._held:
            return False
        seq_id, _ = self._held.popitem(last=False)
        self._ll.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        free_ids.append(seq_id)
        return True

    def _decode(self, entries, free_ids: list[int]) -> list[int]:
        """llama_decode the entries as one batch; the batch index of each entry's last token. When the
        cache has no room, finished sequences are dropped oldest first and the batch retried."""
        ll = self._ll
        batch = self._batch
        n = 0
        outputs = []
        for seq, tokens, samples in entries:
            pos = len(seq.tokens)
            for j, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq.seq_id
                batch.logits[n] = 0
                n += 1
            batch.logits[n - 1] = 1 if samples else 0
            outputs.append(n - 1)
        batch.n_tokens = n
        while True:
            code = ll.llama_decode(self._ctx, batch)
            if code == 0:
                return outputs
            if code == 1 and self._evict_oldest(free_ids):
                continue
            raise HarnessError(f"llama_decode failed (code {code}, {n} tokens, n_ctx {self.n_ctx})")

    def _sample(self, seq: _Seq, index: int, logprobs: bool) -> int:
        import numpy as np

        ll = self._ll
        row = None
        if seq.sampler is None or logprobs:
            row = np.ctypeslib.as_array(ll.llama_get_logits_ith(self._ctx, index), shape=(self.n_vocab,))
        if seq.sampler is None:
            token = int(row.argmax())
        else:
            token = int(ll.llama_sampler_sample(seq.sampler, self._ctx, index))
        if logprobs:
            top = float(row.max())
            seq.logprobs.append(float(row[token]) - top - float(np.log(np.exp(row.astype(np.float64) - top).sum())))
        return token


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
