"""The settings every command that loads a model and rolls out shares (`harness eval`, `compare` and
`train`), declared once: `RunSettings`, with each field's default, rule and help text. The eval,
compare and train configs take each of these fields from it (`shared("task")`: harness/evaluate.py,
harness/training/config.py), placed where the setting stands in their config.yaml, and the CLI makes
their shared options (--task, --model, --seed, --dtype, --device, --backend, --batch-size, the sampling
options, --data-dir, --out, --results-dir) from its fields (cli.options_from).

On disk the settings stay flat and keep their names and order (config.yaml's `task:`, `batch_size:`,
...), so run folders, their files and their ids read as they always did (tests/test_feedback.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from harness.config import DTYPE_HELP, DTYPES, check_device, setting
from harness.data import DATA_ENV
from harness.sampling import Sampling

BACKENDS = ("auto", "hf", "vllm", "llamacpp")


def _named(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


@dataclass(kw_only=True)
class RunSettings:
    # `flags`: the option's names (else --field-name); `envvar`: read from the environment when not given.
    task: str = setting("gsm8k", help="Task name (see `harness tasks`).", flags=("--task", "-t"))
    model: str = setting("embedded", check=_named, help="Alias, hub id, folder or .gguf (see `harness models`).",
                         flags=("--model", "-m"))
    seed: int = setting(0, ge=0, lt=2**32,  # numpy takes seeds in [0, 2**32)
                        help="Seed of the sampling (in a comparison, the same for every method; in training, also "
                             "of the data order and the LoRA initialisation).")
    # 0: as many rows as free memory allows (hf), 32 sequences (llama.cpp); not part of an eval run's identity.
    batch_size: int = setting(0, ge=0, help="Rows decoded at once (0: as many as free memory allows).")
    sampling: Sampling = field(default_factory=Sampling)  # its fields are options too
    dtype: str = setting("auto", choices=DTYPES, help=DTYPE_HELP)
    device: str = setting("auto", check=check_device, help="auto, cpu, cuda, cuda:1, mps.")
    backend: str = setting("auto", choices=BACKENDS,
                           help="Generation backend: auto (vllm on a GPU where installed, else hf), hf (transformers), "
                                "vllm, llamacpp (llama.cpp on a GGUF of the model; in training, LoRA policies, their "
                                "samples weighed by truncated importance weights).")
    # Where the data and the results live: never part of what a run is (a run folder can be moved).
    data_dir: str | None = setting(None, help="Local data folder.", envvar=DATA_ENV)
    out: str | None = setting(None, help="Where to write (default: a folder under RESULTS_DIR named by the "
                                         "settings: runs/<task>-<method>-..., compare/<task>-..., runs/train-...).")
    results_dir: str = setting("results", help="Root of runs/ and compare/.")


def shared(name: str, value: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING) -> Any:
    """RunSettings' field `name` (its default, rule and help) for a config that holds it; `value` or
    `factory`: another default, for a config whose runs start elsewhere (training samples at T = 1)."""
    found = RunSettings.__dataclass_fields__[name]
    if value is dataclasses.MISSING and factory is dataclasses.MISSING:
        value, factory = found.default, found.default_factory
    return dataclasses.field(default=value, default_factory=factory, metadata=found.metadata)
