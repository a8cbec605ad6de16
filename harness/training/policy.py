"""The trainable policy: LoRA adapters on the loaded model (or full fine-tuning). The reference
policy is the same model with its adapters disabled, so no second copy of the weights is held."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from harness.lora import LoraSettings
from harness.sampling import torch_seeded


def reference_mode(policy: torch.nn.Module):
    """Context in which the policy computes the reference model: adapters off. (Full fine-tuning keeps
    a frozen copy instead, see the trainer; there this context changes nothing.)"""
    return policy.disable_adapter() if hasattr(policy, "disable_adapter") else nullcontext()


def add_adapter(policy: torch.nn.Module, name: str, settings: LoraSettings, seed: int) -> None:
    """A second LoRA adapter `name` on the policy's target modules (e.g. a critic sharing its base), its
    random A matrices drawn from `seed`."""
    from peft import LoraConfig

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(policy.peft_config["default"].target_modules), task_type="CAUSAL_LM")
    with torch_seeded(seed):
        policy.add_adapter(name, config)


def adapter_parameters(policy: torch.nn.Module, name: str) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in policy.named_parameters() if f".{name}." in n}


def decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body (hidden states, no LM head) of a causal LM, peft-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder()


@contextmanager
def adapter(policy: torch.nn.Module, name: str) -> Iterator[None]:
    """Run with another named LoRA adapter active (e.g. the critic's), then switch back. peft's switch
    also flips which adapter requires grad; the trainer decides that, so every flag is put back."""
    flags = [(p, p.requires_grad) for p in policy.parameters()]
    previous = policy.active_adapter
    policy.base_model.set_adapter(name)
    try:
        yield
    finally:
        policy.base_model.set_adapter(previous)
        for p, flag in flags:
            p.requires_grad_(flag)


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
