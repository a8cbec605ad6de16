"""Training rollouts from vLLM: the LoRA policy reaches the engine as a saved adapter, one per version.

After every optimizer step the trainer calls `update_policy(policy, step)`; the adapter is saved
(safetensors, peft's format) before the next rollout and served through a new vLLM LoRA request, so
rollouts never come from stale weights and no weights are copied into the engine. Each step logs the
version its rollouts were sampled from (the trainer step whose weights they used) and the off-policy
gap: the mean |trainer log-prob - engine log-prob| over the sampled tokens of up to `GAP_SAMPLES`
completions per rollout call, recomputed by the trainer's model at the same version.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError
from harness.rollout.backend import resolve_backend
from harness.rollout.generator import EngineGenerator, SamplingParams
from harness.rollout.vllm_generator import VLLMGenerator, VLLMSettings

GAP_SAMPLES = 8  # completions per rollout call whose log-probs are recomputed by the trainer's model


def rollout_generator(config, loaded, policy, run_dir: Path, processes: int = 1):
    """The rollout generator of a training run: the decode engine over the policy (hf), or vLLM (LoRA only)."""
    if resolve_backend(config.backend, config.device) != "vllm":
        return EngineGenerator(policy, loaded.tokenizer, config.batch_size)
    if not config.lora.enabled:  # TrainConfig.validate says so first; kept here for callers that skip it
        raise HarnessError("--backend vllm trains LoRA policies only; use --backend hf for full fine-tuning")
    if processes > 1:
        raise HarnessError("--backend vllm runs in one training process; launch without accelerate's multi-process")
    from harness.models import auto_bf16

    # The trainer keeps float32 weights and computes in bf16 autocast where that is native (GPUs): the
    # engine samples in bf16 there too; the logged log-prob gap shows what that costs.
    dtype = "bfloat16" if config.dtype == "auto" and auto_bf16(loaded.device) else loaded.dtype
    settings = VLLMSettings(dtype=dtype, device=loaded.device, gpu_memory_utilization=config.vllm_memory_share,
                            enable_lora=True, max_lora_rank=_vllm_rank(config.lora.rank), seed=config.seed)
    return PolicyVLLMGenerator(loaded.path, loaded.tokenizer, settings, policy, run_dir / "rollout-adapter",
                               eos_ids=EngineGenerator(loaded.model, loaded.tokenizer, 1).eos_ids())


def _vllm_rank(rank: int) -> int:
    """vLLM's max_lora_rank takes a few sizes only; the smallest that holds the policy's rank."""
    for size in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= size:
            return size
    raise HarnessError(f"lora.rank {rank} is above what vLLM serves (512)")


class PolicyVLLMGenerator(VLLMGenerator):
    def __init__(self, model_path: str, tokenizer, settings: VLLMSettings, policy, folder: Path,
                 eos_ids: list[int] | None = None):
        super().__init__(model_path, tokenizer, settings, eos_ids)
        self.policy = policy
        self.folder = Path(folder)
        self.pending_version: int | None = 0  # the version to save before the next rollout
        self.gaps: list[tuple[float, int]] = []  # (sum of |differences|, tokens) since the last update

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
        self.policy.save_pretrained(target)  # adapter_model.safetensors + adapter_config.json
        old = self.lora.lora_path if self.lora is not None else None
        self.set_adapter(target, version)
        if old is not None and Path(old) != target:
            shutil.rmtree(old, ignore_errors=True)  # vLLM loaded it under its own id; a new id reads the new folder
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
