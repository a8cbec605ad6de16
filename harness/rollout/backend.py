"""Which generation backend a run uses: `hf` (the transformers decode engine) or `vllm`.

`auto` is vLLM when it is installed and the run is on a GPU, else hf. The hf backend needs the model in
memory; vLLM loads the weights itself, so with it the harness loads only the tokenizer."""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError

BACKENDS = ("auto", "hf", "vllm")


def resolve_backend(backend: str, device: str) -> str:
    """hf or vllm for `backend` on `device` (auto, cpu, cuda...); vllm asked for but not installed: one line."""
    from harness.rollout.vllm_generator import require_vllm, vllm_installed

    if backend not in BACKENDS:
        raise HarnessError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    if backend == "vllm":
        require_vllm()
        return "vllm"
    if backend == "hf":
        return "hf"
    from harness.models import pick_device

    return "vllm" if vllm_installed() and pick_device(device).startswith("cuda") else "hf"


def load_for_backend(backend: str, spec: str, dtype: str = "auto", device: str = "auto"):
    """The LoadedModel a backend needs: weights in memory for hf, the tokenizer and identity only for vllm."""
    from harness.models import load_model

    return load_model(spec, dtype, device, weights=backend != "vllm")


def make_generator(backend: str, loaded, batch_size: int | None = None, **vllm_settings: Any):
    """The rollout generator of a resolved backend over a loaded model (see load_for_backend)."""
    if backend == "vllm":
        from harness.rollout.vllm_generator import VLLMGenerator, VLLMSettings

        settings = VLLMSettings(dtype=loaded.dtype, device=loaded.device, **vllm_settings)
        return VLLMGenerator(loaded.path, loaded.tokenizer, settings)
    from harness.rollout.generator import EngineGenerator

    return EngineGenerator(loaded.model, loaded.tokenizer, batch_size or None)
