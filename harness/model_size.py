"""N, a model's parameter count, for the compute columns of a table (FLOPs ~ 2 N per token): counted on
loaded weights, recorded in a run's manifest, or counted from a model's config.json on the meta device
(no weights read, nothing downloaded)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any


def parameter_count(model: dict[str, Any] | None) -> int | None:
    """N of a manifest's model entry: its recorded `parameters`, else counted from the model's config.json
    found locally (meta device: no weights loaded, nothing downloaded or built); None when neither."""
    if not model:
        return None
    if isinstance(model.get("parameters"), int):
        return model["parameters"]
    config = _local_config(str(model.get("spec", "")))
    return _count_from_config(str(config)) if config else None


def model_parameters(loaded, spec: str) -> int | None:
    """N of a LoadedModel: counted on its weights, or from its config when a backend loads the weights
    itself (vLLM: `loaded.model` is None)."""
    if loaded.model is not None:
        return count_parameters(loaded.model)
    return parameter_count({"spec": loaded.path or spec})


def count_parameters(torch_model) -> int:
    """N of a loaded model: unique parameters (tied embeddings once)."""
    return sum(p.numel() for p in torch_model.parameters())


def _local_config(spec: str) -> Path | str | None:
    from harness import models

    if spec == "embedded":
        path = models.embedded_cache_path()
    elif spec in models.TINY_SIZES:
        path = models.tiny_cache_path(spec)
    else:
        path = Path(spec).expanduser()
        if not path.exists() and spec and not spec.startswith((".", "/", "~")):
            return _cached_hub_config(spec)
    return path if (path / "config.json").is_file() else None


def _cached_hub_config(hub_id: str) -> str | None:
    try:
        from transformers.utils import cached_file

        found = cached_file(hub_id, "config.json", local_files_only=True, _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError):
        return None
    return str(Path(found).parent) if found else None


@lru_cache(maxsize=None)
def _count_from_config(folder: str) -> int | None:
    import torch
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        with torch.device("meta"):  # shapes only: no memory, no weights read
            model = transformers.AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError):
        return None
    return count_parameters(model)
