"""How each attempt is sampled, declared once: `Sampling` sits inside the eval, compare and train
configs, the generators take it (plus a seed) as `SamplingParams`, and the CLI's options are made from
its fields (their defaults, rules and help texts).

On disk the settings stay flat (config.yaml has `temperature:`, not `sampling: {temperature: ...}`),
so run folders, their ids and `--set temperature=...` read as they always did.

Seeds come from here only (tests/test_layers.py checks it): `seed_for` derives every seed from the parts
that name one random draw: the rollout driver's per-request seeds, the trainer's per-call seeds, named
seeds such as `seed_for(seed, "critic")`. `rng_for`, `torch_generator` and `torch_seeded` turn a seed
into the random source a caller needs, without touching anyone else's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from harness.config import setting


@dataclass(frozen=True, kw_only=True)  # by name only: the field order is not part of the interface
class Sampling:
    max_new_tokens: int = setting(512, ge=1, help="Cap on each attempt's length.")
    temperature: float = setting(0.0, ge=0, help="0 = greedy.")
    top_p: float = setting(1.0, gt=0, le=1, help="Nucleus sampling mass.")


SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(Sampling))


def flatten(settings: dict[str, Any]) -> dict[str, Any]:
    """A config's asdict() with its `sampling` mapping lifted to the top level, in its place: the
    on-disk form."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "sampling":
            out.update(value)
        else:
            out[key] = value
    return out


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """The inverse: top-level sampling keys (a stored config.yaml, a preset, `--set temperature=1`)
    gathered under `sampling`, merged over any `sampling:` mapping given as well."""
    out = {k: v for k, v in values.items() if k not in SAMPLING_FIELDS}
    found = {k: values[k] for k in SAMPLING_FIELDS if k in values}
    if found or "sampling" in values:
        given = values.get("sampling", {})
        out["sampling"] = {**given, **found} if isinstance(given, dict) else given
    return out


@dataclass(frozen=True, kw_only=True)
class SamplingParams(Sampling):
    """The run's `Sampling` plus what one generate call needs: samples per prompt and the base seed."""

    n: int = 1
    seed: int = 0

    @classmethod
    def of(cls, sampling: Sampling, seed: int) -> "SamplingParams":
        return cls(**{f.name: getattr(sampling, f.name) for f in dataclasses.fields(Sampling)}, seed=seed)


def seed_for(*parts: object) -> int:
    """THE seed derivation: a 63-bit seed from the parts that identify one random draw (run seed, then
    e.g. problem, sample and step; or training step, process and call; or a name: "critic"): stable
    across processes and independent of which requests share a batch."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def rng_for(*parts: object) -> random.Random:
    """A Python RNG of its own for one named draw (a shuffle, a generated puzzle), seeded by the parts
    joined with ":" (string seeding: the orders this harness has always drawn)."""
    return random.Random(":".join(map(str, parts)))


def seed63(seed: int) -> int:
    """`seed` as the non-negative 63-bit integer torch and vLLM take (`seed_for`'s seeds already are)."""
    return seed % (2**63)


def seed32(seed: int, reserved: int | None = None) -> int:
    """A 32-bit seed folded from a 63-bit one, for a backend that takes 32 bits (llama.cpp); never
    `reserved` (a value the backend reads as "pick a random seed")."""
    folded = (seed ^ (seed >> 32)) & 0xFFFFFFFF
    return folded if folded != reserved else 0x5EED


def torch_generator(seed: int, device):
    """A torch.Generator of its own on `device`, seeded with `seed` (one per sampled row)."""
    import torch

    return torch.Generator(device=device).manual_seed(seed63(seed))


def numpy_rng(seed: int):
    """A NumPy Generator of its own (the bootstrap's resampling)."""
    import numpy as np

    return np.random.default_rng(seed)


@contextmanager
def torch_seeded(seed: int) -> Iterator[None]:
    """torch's global RNG (CPU and every GPU) set to `seed` inside the block, restored after: for random
    weight initialisation (LoRA's A matrices, a tiny model built from a config) and the plain `generate`
    path, which draws from the global RNG."""
    import torch

    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(seed)
        yield


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global RNGs seeded (accelerate's `set_seed`): whatever draws from them
    and is not seeded on purpose still repeats."""
    from accelerate.utils import set_seed

    set_seed(seed)
