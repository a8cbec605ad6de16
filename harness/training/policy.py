"""The trainable policy: LoRA adapters on the loaded model (or full fine-tuning). The reference
policy is the same model with its adapters disabled, so no second copy of the weights is held."""

from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from harness.errors import HarnessError
from harness.training.config import DEFAULT_TARGETS, LoraSettings


def attach_lora(model: torch.nn.Module, settings: LoraSettings, seed: int) -> torch.nn.Module:
    if not settings.enabled:
        model.train()
        return model
    from peft import LoraConfig, get_peft_model

    # peft asks transformers 5 a deprecated question on every forward; the answer is right, the warning noise.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")

    torch.manual_seed(seed)  # LoRA's A matrices are random: same seed, same start
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in settings.targets if t in present]
    # The default list covers several architectures and is filtered; targets named by the user must all exist.
    missing = [t for t in settings.targets if t not in present]
    if not targets or (missing and settings.targets != DEFAULT_TARGETS):
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) and "." in name})
        raise HarnessError(f"lora.targets: {', '.join(missing)} not in this model; its linear layers: {', '.join(linear)}")
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.train()
    return peft_model


def reference_mode(policy: torch.nn.Module):
    """Context in which the policy computes the reference model: adapters off. (Full fine-tuning keeps
    a frozen copy instead, see the trainer; there this context changes nothing.)"""
    return policy.disable_adapter() if hasattr(policy, "disable_adapter") else nullcontext()


@contextmanager
def adapter(policy: torch.nn.Module, name: str) -> Iterator[None]:
    """Run with another named LoRA adapter active (e.g. the critic's), then switch back."""
    previous = policy.active_adapter
    policy.base_model.set_adapter(name)
    try:
        yield
    finally:
        policy.base_model.set_adapter(previous)


def enable_gradient_checkpointing(policy: torch.nn.Module) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them (memory for time:
    what fits a 7-8 B model's update on one GPU). With LoRA the frozen embeddings' output must require
    grad, or checkpointed layers would have nothing to backpropagate through."""
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    # transformers 5.x renamed it (the old name warns); older versions have only the old one.
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(policy, "enable_input_require_grads"):
        policy.enable_input_require_grads()
