"""Which generation backend a run uses: `hf` (the transformers decode engine), `vllm` or `llamacpp`.

`auto` is vLLM when it is installed and the run is on a GPU; on a CPU llama.cpp for a GGUF model where
bf16 is not native (see `resolve_backend`), else hf.
The hf backend needs the model in memory; vLLM and llama.cpp load the weights themselves (llama.cpp
from a GGUF), so with them the harness loads only the tokenizer."""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError

from harness.settings import BACKENDS


def resolve_backend(backend: str, device: str, model: str | None = None) -> str:
    """hf, vllm or llamacpp for `backend` on `device` (auto, cpu, cuda...) and `model` (a spec); vllm or
    llamacpp asked for but not installed: one line.

    `auto`: vLLM on a GPU where it is installed; on a CPU, llama.cpp where it is installed, the model is
    a GGUF already (the embedded model, a .gguf file: llama.cpp runs its quantized weights as they are)
    and `--dtype auto` means float32 here (no native bf16); else hf. Measured on one AMD EPYC with
    AVX512-BF16 (README, Benchmarks): `harness eval --turns 2` at 97.8 generated tokens/s with hf in
    bf16, 66.0 with llama.cpp; plain float32 `generate` at 41-45. Where bf16 is native hf wins,
    elsewhere llama.cpp."""
    from harness.rollout.vllm_generator import require_vllm, vllm_installed

    if backend not in BACKENDS:
        raise HarnessError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    if backend == "llamacpp":
        from harness.rollout.llamacpp_lib import require_llamacpp

        require_llamacpp()
        return "llamacpp"
    if backend == "vllm":
        require_vllm()
        return "vllm"
    if backend == "hf":
        return "hf"
    from harness.models import auto_bf16, pick_device

    where = pick_device(device)
    if where.startswith("cuda"):
        return "vllm" if vllm_installed() else "hf"
    if where == "cpu" and model is not None and gguf_native(model) and not auto_bf16(where):
        from harness.rollout.llamacpp_lib import llamacpp_installed

        if llamacpp_installed():
            return "llamacpp"
    return "hf"


def gguf_native(model: str) -> bool:
    """Whether a model spec is a GGUF as it stands (the embedded model, a .gguf file)."""
    return model == "embedded" or model.endswith(".gguf")


def load_for_backend(backend: str, spec: str, dtype: str = "auto", device: str = "auto"):
    """The LoadedModel a backend needs: weights in memory for hf, the tokenizer and identity only for vllm
    and llamacpp (llamacpp: `gguf_path` set too, the GGUF its engine loads)."""
    from harness.models import load_model

    loaded = load_model(spec, dtype, device, weights=backend == "hf")
    if backend == "llamacpp":
        loaded.gguf_path = str(llamacpp_gguf(spec))
    return loaded


def llamacpp_gguf(spec: str):
    """The GGUF llama.cpp runs for a model spec: a .gguf file as it is; the embedded model's own GGUF;
    any other model converted once (f32) by harness.gguf_export."""
    from pathlib import Path

    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise HarnessError(f"{spec}: no such model file")
        return path
    from harness.gguf_export import gguf_for

    return gguf_for(spec)


def make_generator(backend: str, loaded, batch_size: int | None = None, **vllm_settings: Any):
    """The rollout generator of a resolved backend over a loaded model (see load_for_backend).
    llamacpp: `batch_size` is the number of sequences decoding at once (None: 32)."""
    if backend == "llamacpp":
        from harness.rollout.llamacpp_generator import LlamaCppGenerator

        gguf = getattr(loaded, "gguf_path", None)
        if not gguf:
            raise HarnessError("the llamacpp backend needs a model loaded by load_for_backend('llamacpp', ...)")
        return LlamaCppGenerator(gguf, loaded.tokenizer, loaded_eos_ids(loaded), parallel=batch_size or 32)
    if backend == "vllm":
        from harness.rollout.vllm_generator import VLLMGenerator, VLLMSettings

        settings = VLLMSettings(dtype=loaded.dtype, device=loaded.device, **vllm_settings)
        return VLLMGenerator(loaded.path, loaded.tokenizer, settings)
    from harness.rollout.generator import EngineGenerator

    return EngineGenerator(loaded.model, loaded.tokenizer, batch_size or None)


def loaded_eos_ids(loaded) -> list[int]:
    """The EOS set the hf backend would use for a LoadedModel whose weights were not loaded: the model
    folder's generation config (or, for a GGUF, the config transformers reads from the file), then the
    tokenizer's."""
    from pathlib import Path

    from harness.rollout.generator import eos_set
    from harness.rollout.vllm_generator import model_eos_ids

    gguf = getattr(loaded, "gguf_path", None)
    folder = Path(loaded.path)
    if (folder / "config.json").is_file() or (folder / "generation_config.json").is_file():
        return model_eos_ids(str(folder), loaded.tokenizer)
    if gguf and Path(gguf).parent == folder:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder, gguf_file=Path(gguf).name)
        return eos_set(config.eos_token_id, loaded.tokenizer)
    return eos_set(None, loaded.tokenizer)
