"""How each attempt is sampled, declared once: `Sampling` sits inside the eval, compare and train
configs, the generators take it (plus a seed) as `SamplingParams`, and the CLI's options are made from
its fields (their defaults, rules and help texts).

On disk the settings stay flat (config.yaml has `temperature:`, not `sampling: {temperature: ...}`),
so run folders, their ids and `--set temperature=...` read as they always did.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

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
