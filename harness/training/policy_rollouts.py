"""Training rollouts from an engine that holds its own copy of the weights (vLLM, llama.cpp): the LoRA
policy reaches the engine as a saved adapter, one per version.

After every optimizer step the trainer calls `update_policy(policy, step)`; before the next rollout the
adapter is written (vLLM: peft's safetensors folder; llama.cpp: a GGUF LoRA adapter) and applied to the
engine's base weights (no reload of the base), so rollouts never come from stale weights. Each step logs
the version its rollouts were sampled from (the trainer step whose weights they used) and the off-policy
gap: the mean |trainer log-prob - engine log-prob| over the sampled tokens of up to `GAP_SAMPLES`
completions per rollout call, recomputed by the trainer's model at the same version. The engine's
log-probs of every sampled token stay on the episode's steps, for the trainer's importance weights
(`harness/training/losses.py: truncated_importance_weights`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError
from harness.rollout.backend import resolve_backend
from harness.rollout.generator import EngineGenerator
from harness.sampling import SamplingParams
from harness.rollout.llamacpp_generator import LlamaCppGenerator  # neither imports its engine until built
from harness.rollout.vllm_generator import VLLMGenerator

GAP_SAMPLES = 2  # completions per rollout call whose log-probs the trainer recomputes (each a full forward: on CPU ~5 s)
ENGINES = ("vllm", "llamacpp")  # backends with their own copy of the weights


def training_backend(config) -> str:
    """The backend a training run samples with. `auto` is vLLM on a GPU where installed, else hf: never
    llama.cpp, whose quantized weights make rollouts off-policy (`--backend llamacpp` asks for it)."""
    return resolve_backend(config.backend, config.device)  # without a model spec, auto never picks llama.cpp


def rollout_generator(config, loaded, policy, run_dir: Path, processes: int = 1):
    """The rollout generator of a training run: the decode engine over the policy (hf: the generator
    `harness eval` would build, harness.rollout.backend.make_generator, over the policy), or an engine
    with its own weights that follows the policy's adapter (vllm, llamacpp; LoRA only, one process)."""
    backend = training_backend(config)
    if backend not in ENGINES:
        from dataclasses import replace

        from harness.rollout.backend import make_generator

        return make_generator("hf", replace(loaded, model=policy), config.batch_size)  # 0: rows from free memory
    if not config.lora.enabled:  # TrainConfig.validate says so first; kept here for callers that skip it
        raise HarnessError(f"--backend {backend} trains LoRA policies only; use --backend hf for full fine-tuning")
    if processes > 1:
        raise HarnessError(f"--backend {backend} runs in one training process; launch without accelerate's multi-process")
    eos = EngineGenerator(loaded.model, loaded.tokenizer, 1).eos_ids()
    if backend == "llamacpp":
        from harness.rollout.backend import llamacpp_gguf

        return PolicyLlamaCppGenerator(llamacpp_gguf(config.model), loaded.tokenizer, eos, policy,
                                       run_dir / "rollout-adapter", parallel=config.batch_size or 32)
    from harness.models import auto_bf16
    from harness.rollout.vllm_generator import VLLMSettings

    # The trainer keeps float32 weights and computes in bf16 autocast where that is native (GPUs): the
    # engine samples in bf16 there too; the logged log-prob gap shows what that costs.
    dtype = "bfloat16" if config.dtype == "auto" and auto_bf16(loaded.device) else loaded.dtype
    settings = VLLMSettings(dtype=dtype, device=loaded.device, gpu_memory_utilization=config.vllm_memory_share,
                            enable_lora=True, max_lora_rank=_vllm_rank(config.lora.rank), seed=config.seed)
    return PolicyVLLMGenerator(loaded.path, loaded.tokenizer, settings, policy, run_dir / "rollout-adapter",
                               eos_ids=eos)


def _vllm_rank(rank: int) -> int:
    """vLLM's max_lora_rank takes a few sizes only; the smallest that holds the policy's rank."""
    for size in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= size:
            return size
    raise HarnessError(f"lora.rank {rank} is above what vLLM serves (512)")


class PolicyRollouts:
    """What an engine generator needs to sample from the trainer's policy: put before the engine's
    class in the bases. The engine provides `set_adapter(path, version)` and `stream(..., logprobs=)`."""

    def _follow(self, policy, folder: Path) -> None:
        self.policy = policy
        self.folder = Path(folder)
        self.pending_version: int | None = 0  # the version to publish before the next rollout
        self.published: Path | None = None
        self.gaps: list[tuple[float, int]] = []  # (sum of |differences|, tokens) since the last update

    def publish(self, target: Path) -> Path:
        """Write the policy's adapter for the engine under `target`; the path `set_adapter` takes."""
        raise NotImplementedError

    def update_policy(self, policy, step: int) -> dict[str, float]:
        """The optimizer stepped (or a checkpoint was loaded): the next rollout samples from this policy.
        Returns what the rollouts since the last update came from: their version and the log-prob gap."""
        logs: dict[str, float] = {"policy_version": float(self.policy_version)}
        total, tokens = sum(g for g, _ in self.gaps), sum(n for _, n in self.gaps)
        if tokens:
            logs["logprob_gap"] = total / tokens
        self.gaps = []
        self.policy, self.pending_version = policy, step
        return logs

    def stream(self, jobs, params: SamplingParams, on_done: Callable | None = None, logprobs: bool = True):
        self._sync()
        checked: list[Any] = []

        def done(key, completions, seconds):
            checked.extend(c for c in completions if len(checked) < GAP_SAMPLES and c.token_ids)
            return on_done(key, completions, seconds) if on_done is not None else []

        result = super().stream(jobs, params, done, logprobs=True)
        if checked:
            self.gaps.append(self._gap(checked))
        return result

    def _sync(self) -> None:
        if self.pending_version is None:
            return
        version = self.pending_version
        target = self.folder / f"v{version}"
        if target.exists():
            shutil.rmtree(target)
        path = self.publish(target)
        old = self.published
        self.set_adapter(path, version)
        self.published = target
        if old is not None and old != target:
            shutil.rmtree(old, ignore_errors=True)  # the engine holds what it loaded; the files can go
        self.pending_version = None

    def _gap(self, completions) -> tuple[float, int]:
        """Sum of |trainer - engine| log-probs over the completions' sampled tokens, and how many tokens."""
        import torch

        total, count = 0.0, 0
        device = next(self.policy.parameters()).device
        with torch.no_grad():
            for c in completions:
                engine = c.engine_logprobs
                if not engine:
                    continue
                ids = torch.tensor([list(c.prompt_ids) + list(c.token_ids)], device=device)
                logits = self.policy(input_ids=ids).logits[0, len(c.prompt_ids) - 1 : -1].float()
                mine = logits.log_softmax(-1).gather(-1, ids[0, len(c.prompt_ids):, None])[:, 0]
                theirs = torch.tensor(engine[: len(mine)], device=device)
                total += float((mine[: len(theirs)] - theirs).abs().sum())
                count += len(theirs)
        return total, count


class PolicyVLLMGenerator(PolicyRollouts, VLLMGenerator):
    """vLLM serving the policy's LoRA as a peft adapter folder, one LoRA request per version."""

    def __init__(self, model_path: str, tokenizer, settings, policy, folder: Path, eos_ids: list[int] | None = None):
        VLLMGenerator.__init__(self, model_path, tokenizer, settings, eos_ids)
        self._follow(policy, folder)

    def publish(self, target: Path) -> Path:
        self.policy.save_pretrained(target)  # adapter_model.safetensors + adapter_config.json
        return target


class PolicyLlamaCppGenerator(PolicyRollouts, LlamaCppGenerator):
    """llama.cpp on the base model's GGUF with the policy's LoRA as a GGUF adapter (f32), one per version."""

    def __init__(self, gguf_path, tokenizer, eos_ids, policy, folder: Path, **engine):
        LlamaCppGenerator.__init__(self, gguf_path, tokenizer, eos_ids, **engine)
        self._follow(policy, folder)

    def publish(self, target: Path) -> Path:
        from harness.gguf_lora import export_lora_gguf

        target.mkdir(parents=True, exist_ok=True)
        return export_lora_gguf(self.policy, target / "adapter.gguf")
