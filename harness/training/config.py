"""TrainConfig: one typed config for every trained method; method-specific knobs live in `method`
(parsed by the method into its own dataclass, beside its code)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.config import build, merge, parse_overrides, read_yaml
from harness.errors import HarnessError


@dataclass
class LoraSettings:
    enabled: bool = True  # False = full fine-tuning
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                        "gate_proj", "up_proj", "down_proj"])


@dataclass
class TrainConfig:
    method: str = "score"
    task: str = "gsm8k"
    split: str = "train"
    model: str = "embedded"
    max_steps: int = 100
    problems_per_step: int = 8  # distinct problems per optimizer step (global, over all processes)
    samples_per_problem: int = 2  # episodes per problem (>= 2 gives leave-one-out baselines)
    grad_accum: int = 1  # micro-batches per optimizer step
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    lr: float = 5e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)
    method_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"alpha": 10, "stage1_steps": 50}
    checkpoint_every: int = 50
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 8  # generation batch
    data_dir: str | None = None
    out: str | None = None
    results_dir: str = "results"
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:8]
        model = Path(self.model).name if "/" in self.model else self.model
        return Path(self.results_dir) / "runs" / f"train-{self.method}-{self.task}-{model}-{digest}"

    def validate(self) -> None:
        for name in ("max_steps", "problems_per_step", "samples_per_problem", "grad_accum", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise HarnessError(f"{name} must be positive")
        if self.problems_per_step % self.grad_accum:
            raise HarnessError("problems_per_step must be a multiple of grad_accum")


# Presets: starting points named on the command line with --preset.
PRESETS: dict[str, dict[str, Any]] = {
    # Seconds per step on a tiny random model: for tests and smoke runs.
    "cpu-tiny": dict(model="tiny-random", max_steps=4, problems_per_step=4, samples_per_problem=2,
                     max_new_tokens=16, lr=1e-3, batch_size=8, checkpoint_every=2,
                     lora=dict(rank=8, alpha=16), report_to=[]),
    # The embedded 0.5B model on 2 CPU cores: a few short steps.
    "cpu-demo": dict(model="embedded", max_steps=4, problems_per_step=2, samples_per_problem=2,
                     max_new_tokens=96, lr=1e-5, batch_size=4, checkpoint_every=2, lora=dict(rank=8, alpha=16)),
    # SCoRe Table 5 (MATH): lr 5e-6, alpha 10, beta1 0.01, beta2 0.1, temperature 1.0.
    "gpu-paper": dict(model="google/gemma-2-2b-it", task="math500", max_steps=3000, problems_per_step=64,
                      samples_per_problem=4, grad_accum=4, max_new_tokens=1024, lr=5e-6, batch_size=64,
                      checkpoint_every=100,
                      method_options=dict(alpha=10.0, beta1=0.01, beta2=0.1, stage1_steps=1000)),
    # SCoRe Table 5 (MBPP, evaluated on HumanEval): lr 1e-5, 1500 steps, batch 128 (64 problems x 2
    # samples), temperature 1.0, alpha 10, beta1 0.01, beta2 0.25. Stage I length (a third) is ours.
    "gpu-paper-code": dict(model="google/gemma-2-2b-it", task="mbpp", max_steps=1500, problems_per_step=64,
                           samples_per_problem=2, grad_accum=4, max_new_tokens=512, lr=1e-5, temperature=1.0,
                           batch_size=64, checkpoint_every=100,
                           method_options=dict(alpha=10.0, beta1=0.01, beta2=0.25, stage1_steps=500)),
}


def load_train_config(preset: str | None = None, yaml_path: str | None = None, overrides: list[str] | None = None,
                      explicit: dict[str, Any] | None = None) -> TrainConfig:
    """defaults < preset < YAML < explicit CLI options < --set overrides."""
    if preset is not None and preset not in PRESETS:
        raise HarnessError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    values = merge(PRESETS.get(preset, {}) if preset else {}, read_yaml(yaml_path) if yaml_path else {},
                   {k: v for k, v in (explicit or {}).items() if v is not None}, parse_overrides(overrides or []))
    lora = values.pop("lora", {})
    config = build(TrainConfig, values, "train")
    config.lora = build(LoraSettings, merge(asdict(LoraSettings()), lora), "lora")
    config.validate()
    return config
