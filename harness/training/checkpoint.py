"""Checkpoints as safetensors: trainable weights, optimizer state, method state and RNG states, plus
a JSON of counters. Written to a temp folder and renamed, so a killed save never looks complete."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from harness.errors import HarnessError


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts/lists of tensors and numbers) into safetensors + a JSON skeleton."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(node, np.ndarray):
            tensors[path] = torch.from_numpy(node.astype(np.int64) if node.dtype.kind in "iu" else node.copy())
            return {"__ndarray__": path, "dtype": str(node.dtype)}
        if isinstance(node, dict):
            return {"__dict__": [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(node.items())]}
        if isinstance(node, (list, tuple)):
            return {"__list__": [walk(v, f"{path}.{i}") for i, v in enumerate(node)], "tuple": isinstance(node, tuple)}
        return node

    return tensors, walk(state, prefix or "s")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            return tensors[skeleton["__ndarray__"]].numpy().astype(skeleton["dtype"])
        if "__dict__" in skeleton:
            return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            items = [unflatten_state(v, tensors) for v in skeleton["__list__"]]
            return tuple(items) if skeleton.get("tuple") else items
    return skeleton


def save_state(folder: Path, name: str, state: Any) -> None:
    tensors, skeleton = flatten_state(state)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton))


def load_state(folder: Path, name: str) -> Any:
    tensors = load_file(str(folder / f"{name}.safetensors"))
    return unflatten_state(json.loads((folder / f"{name}.json").read_text()), tensors)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": list(np.random.get_state()), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1]), *np_state[2:]))
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(root: Path, step: int, parts: dict[str, Any], counters: dict[str, Any], keep: int = 2) -> Path:
    final = root / f"step-{step:06d}"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".step-", dir=root))
    try:
        for name, state in parts.items():
            save_state(tmp, name, state)
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **counters}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("step-*"))
    return found[-1] if found else None


def require_checkpoint(run_dir: Path) -> Path:
    if not run_dir.is_dir():
        raise HarnessError(f"{run_dir}: no such run folder")
    found = latest_checkpoint(run_dir)
    if found is None or not (found / "trainer_state.json").is_file():
        raise HarnessError(f"{run_dir}: no checkpoint found under checkpoints/")
    return found


def load_trained_policy(run_dir: Path, dtype: str = "auto", device: str = "auto"):
    """The trained policy of a run, as a LoadedModel: its base model with the last checkpoint's
    weights (LoRA merged into the base, so generation runs at base-model speed)."""
    import yaml

    from harness.config import build
    from harness.data import file_sha256
    from harness.models import load_model
    from harness.training.config import LoraSettings
    from harness.training.policy import attach_lora

    folder = require_checkpoint(Path(run_dir))
    config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    loaded = load_model(config["model"], dtype, device)
    lora = build(LoraSettings, config.get("lora", {}), "lora")
    model = attach_lora(loaded.model, lora, config.get("seed", 0))
    weights = load_state(folder, "weights")
    named = dict(model.named_parameters())
    missing = sorted(set(weights) - set(named))
    if missing:
        raise HarnessError(f"{folder}: checkpoint weights do not fit the model ({missing[0]} ...)")
    with torch.no_grad():
        for name, value in weights.items():
            named[name].copy_(value.to(named[name].dtype))
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    loaded.model = model
    loaded.model_id = f"{loaded.model_id}+{Path(run_dir).name}/{folder.name}"
    loaded.weights_sha256 = file_sha256(folder / "weights.safetensors")
    return loaded
