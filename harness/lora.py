"""LoRA: its settings and attaching adapters to a loaded model. Below training and evaluation alike:
the trainer attaches them to train, an evaluation of a trained run attaches them to load its weights."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from harness.config import setting
from harness.errors import HarnessError
from harness.sampling import torch_seeded

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    enabled: bool = True  # False = full fine-tuning
    rank: int = setting(16, ge=1)
    alpha: int = setting(32, gt=0)
    dropout: float = setting(0.0, ge=0, lt=1)
    # The default list is filtered to the modules a model has; a list given explicitly must all exist.
    targets: list[str] = setting(factory=lambda: list(DEFAULT_TARGETS),
                                 check=lambda t: None if t else "must name at least one module")



def attach_lora(model: torch.nn.Module, settings: LoraSettings, seed: int) -> torch.nn.Module:
    if not settings.enabled:
        model.train()
        return model
    from peft import LoraConfig, get_peft_model

    # peft asks transformers 5 a deprecated question on every forward; the answer is right, the warning noise.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")

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
    with torch_seeded(seed):  # LoRA's A matrices are random: same seed, same start
        peft_model = get_peft_model(model, config)
    peft_model.train()
    return peft_model
