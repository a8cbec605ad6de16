"""TrainConfig: one typed config for every trained method; method-specific knobs live in `method`
(parsed by the method into its own dataclass, beside its code)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.config import build, check_fields, merge, parse_overrides, read_yaml, setting
from harness.errors import HarnessError
from harness.lora import LoraSettings
from harness.sampling import Sampling, flatten, nest
from harness.settings import shared
from harness.store import run_hash


def _trackers() -> tuple[str, ...]:
    return ("tensorboard", "wandb", "comet_ml", "aim", "mlflow", "clearml", "dvclive", "swanlab", "trackio")


def _installed_trackers(names: list[str]) -> str | None:
    import importlib.util

    missing = [n for n in names if importlib.util.find_spec(n) is None]
    return f"names {', '.join(missing)}, which is not installed (report_to=none turns logging off)" if missing else None


@dataclass
class TrainConfig:
    """What a training run is: the run settings (`shared`: harness/settings.py) and what training adds,
    in the order of a training run's config.yaml."""

    method: str = "score"
    task: str = shared("task")
    split: str = "train"
    model: str = shared("model")
    max_steps: int = setting(100, ge=1)
    # > 0: stop once the rollouts have generated this many tokens (harness/training/budget.py); max_steps caps
    rollout_tokens: int = setting(0, ge=0)
    problems_per_step: int = setting(8, ge=1)  # distinct problems per optimizer step (global, over all processes)
    samples_per_problem: int = setting(2, ge=1)  # episodes per problem (>= 2 gives leave-one-out baselines)
    grad_accum: int = setting(1, ge=1)  # micro-batches per optimizer step
    # Training samples on-policy (T = 1) and shorter by default than evaluation's greedy 512 tokens.
    sampling: Sampling = shared("sampling", factory=lambda: Sampling(max_new_tokens=256, temperature=1.0))
    lr: float = setting(5e-6, gt=0)
    weight_decay: float = setting(0.0, ge=0)
    max_grad_norm: float = setting(1.0, ge=0)  # 0: no clipping
    warmup_steps: int = setting(0, ge=0)
    lora: LoraSettings = field(default_factory=LoraSettings)
    method_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"alpha": 10, "stage1_steps": 50}
    checkpoint_every: int = setting(50, ge=1)
    seed: int = shared("seed")
    dtype: str = shared("dtype")
    device: str = shared("device")
    # 8 rows by default (0, rows from free memory, is allowed as in eval): a default run's id is the one it
    # always had (batch_size is part of a training run's identity).
    batch_size: int = shared("batch_size", 8)
    backend: str = shared("backend")  # auto never picks llama.cpp for training (see training_backend)
    vllm_memory_share: float = setting(0.3, gt=0, lt=1)  # GPU memory for the vLLM engine beside the trainer
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (big models on one GPU)
    # Where the data and the run live: not part of a run's identity (a run folder can be moved).
    data_dir: str | None = shared("data_dir")
    out: str | None = shared("out")
    results_dir: str = shared("results_dir")
    report_to: list[str] = setting(factory=lambda: ["tensorboard"], choices=_trackers(), check=_installed_trackers)

    def identity(self) -> dict[str, Any]:
        """The settings that make a run what it is; a resume must match them (max_steps and the token
        budget may grow)."""
        return {k: v for k, v in self._identity_settings().items() if k not in LOCATION | GROWABLE}

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        what = {k: v for k, v in self._identity_settings().items() if k not in LOCATION}  # the same run wherever data lives
        digest = run_hash(what)
        model = Path(self.model).name if "/" in self.model else self.model
        return Path(self.results_dir) / "runs" / f"train-{self.method}-{self.task}-{model}-{digest}"

    def settings(self) -> dict[str, Any]:
        """Every field, flat (sampling's at the top level): what config.yaml and the manifest hold."""
        return flatten(asdict(self))

    def _identity_settings(self) -> dict[str, Any]:
        """Every field; the rollout-backend ones only where they change the run (an engine backend,
        gradient checkpointing on), so runs from before they existed keep their folders and resume."""
        from harness.training.policy_rollouts import training_backend

        found = self.settings()
        backend = training_backend(self)
        if backend == "hf":
            del found["backend"]
        if backend != "vllm":
            del found["vllm_memory_share"]
        if not self.gradient_checkpointing:
            del found["gradient_checkpointing"]
        if not self.rollout_tokens:
            del found["rollout_tokens"]
        return found

    def validate(self) -> None:
        """Rules across fields and registries (each field's own rule is checked by `build`)."""
        from harness.method import METHODS
        from harness.task import get_task
        from harness.training.objective import parse_options

        check_fields(self.lora, "lora")
        from harness.training.policy_rollouts import ENGINES, training_backend

        backend = training_backend(self)
        if backend in ENGINES and not self.lora.enabled:
            raise HarnessError(f"--backend {backend} trains LoRA policies only (it would sample from stale full "
                               "weights); use --backend hf for full fine-tuning")
        if self.problems_per_step % self.grad_accum:
            raise HarnessError("problems_per_step must be a multiple of grad_accum")
        task = get_task(self.task)
        task.check_split(self.split)
        method = METHODS.get(self.method)(**self.method_options)
        if method.objective is None:
            raise HarnessError(f"method {self.method!r} is {method.kind}: it has nothing to train")
        # Unknown or out-of-range method_options: one line, before any work.
        opts = parse_options(method.objective.options_class, method.options, self.method)
        if self.rollout_tokens and getattr(opts, "stage1_steps", None) == 0:
            raise HarnessError(f"{self.method} on a token budget needs method_options.stage1_steps: its default, a "
                               "third of max_steps, assumes the run ends at max_steps")


# Fields that say where things are, not what a run is.
LOCATION = {"out", "results_dir", "data_dir"}
# Fields a resumed run may raise: how far it goes, not what it is.
GROWABLE = {"max_steps", "rollout_tokens"}


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
    # Sampling settings are flat in every layer (config.yaml, presets, `--set temperature=1`);
    # `sampling.temperature` is accepted too.
    layers = [PRESETS.get(preset, {}) if preset else {}, read_yaml(yaml_path) if yaml_path else {},
              {k: v for k, v in (explicit or {}).items() if v is not None}, parse_overrides(overrides or [])]
    values = merge(*(nest(layer) for layer in layers))
    nested = {}
    for name, kind in (("lora", "LoRA settings"), ("sampling", "sampling settings")):
        nested[name] = values.pop(name, {})
        if not isinstance(nested[name], dict):
            raise HarnessError(f"{name}: expected a mapping of {kind}, got {nested[name]!r}")
    # The nested settings first, so TrainConfig's cross-field rules (validate) see the real ones.
    lora = build(LoraSettings, merge(asdict(LoraSettings()), nested["lora"]), "lora")
    sampling = build(Sampling, merge(asdict(TrainConfig().sampling), nested["sampling"]), "train")
    return build(TrainConfig, {**values, "lora": lora, "sampling": sampling}, "train")
