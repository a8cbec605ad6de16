"""Tiny random models with weights drawn wide enough that greedy text varies by prompt and step (at the
stored init every row repeats one token, which would make any two backends agree), saved as model
folders every backend loads. Shared by tests/ and tests_vllm/ (which puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path


def widen(loaded, std: float = 0.3, seed: int = 0):
    """Redraw a loaded model's matrices from N(0, std^2) under `seed`, in place; returns it."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in loaded.model.parameters():
            if p.dim() >= 2:
                p.normal_(0, std)
    return loaded


def save_wide_model(spec: str, folder: Path, std: float = 0.3, seed: int = 0):
    """Load tiny model `spec`, redraw its matrices from N(0, std^2) under `seed`, save it (weights and
    tokenizer) to `folder`; returns the LoadedModel with the wide weights."""
    from harness.models import load_model

    loaded = widen(load_model(spec, dtype="float32", device="cpu"), std, seed)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return loaded
