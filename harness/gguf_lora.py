"""A peft LoRA adapter as a GGUF LoRA adapter llama.cpp applies to a base model without reloading it
(following llama.cpp's convert_lora_to_gguf.py), written with harness/gguf_export.py's tensor names,
row transforms and streamed atomic writer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.errors import HarnessError
from harness.gguf_export import _arch, _config_dict, _gguf, _out_type, _Planned, _row_transform, _write_streamed
from harness.lora import LoraSettings

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


@dataclass
class _LoraPair:
    a: Any  # torch tensor (rank, in)
    b: Any  # torch tensor (out, rank)
    scale: float | None = None  # the module's scaling (peft), None: alpha / rank


def _strip_prefix(module: str) -> str:
    for prefix in ("base_model.model.", "base_model."):
        if module.startswith(prefix):
            return module[len(prefix):]
    return module


def _pairs_from_peft(model, adapter: str) -> dict[str, _LoraPair]:
    pairs = {}
    for name, module in model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if lora_a is None or lora_b is None or adapter not in lora_a:
            continue
        pairs[_strip_prefix(name)] = _LoraPair(lora_a[adapter].weight.detach(), lora_b[adapter].weight.detach(),
                                               float(module.scaling[adapter]))
    return pairs


def _pairs_from_state(state: Mapping[str, Any], adapter: str) -> dict[str, _LoraPair]:
    halves: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        match = _LORA_KEY.match(key)
        if match is None:
            if ".lora_" in key:
                raise HarnessError(f"LoRA state: unexpected tensor {key}")
            continue  # base weights, e.g. a full checkpoint's frozen layers
        if match["adapter"] not in (None, adapter):
            continue
        halves.setdefault(_strip_prefix(match["module"]), {})[match["ab"]] = value.detach()
    broken = [m for m, h in halves.items() if len(h) != 2]
    if broken:
        raise HarnessError(f"LoRA state: {broken[0]} has only lora_{next(iter(halves[broken[0]]))}")
    return {m: _LoraPair(h["A"], h["B"]) for m, h in halves.items()}


def export_lora_gguf(source: Any, out: Path, *, alpha: float | LoraSettings | None = None, config: Any = None,
                     adapter: str = "default", out_type: str = "f32") -> Path:
    """Write a LoRA adapter as a GGUF adapter llama.cpp applies (llama_adapter_lora_init, then
    llama_set_adapter_lora with scale 1.0): general.type "adapter", adapter.type "lora",
    adapter.lora.alpha, tensors "<gguf name>.lora_a" (rank x in) and ".lora_b" (out x rank).

    `source`: a peft model (its adapter `adapter`, "default" unless named; alpha, rank and config from
    the model), or a state dict of lora_A/lora_B tensors (peft's names, with or without the adapter
    name), which needs `alpha` (a number or the LoraSettings it was trained with) and `config` (the base
    model's config, as a transformers config, a dict or the model folder). llama.cpp scales by
    alpha / rank, as peft does (rslora and per-module alphas are folded into lora_b)."""
    gguf = _gguf()
    ftype, wanted = _out_type(out_type)
    if hasattr(source, "peft_config"):
        if adapter not in source.peft_config:
            raise HarnessError(f"the model has no LoRA adapter {adapter!r} (it has {', '.join(source.peft_config)})")
        pairs = _pairs_from_peft(source, adapter)
        base = source.get_base_model() if hasattr(source, "get_base_model") else source
        config = config if config is not None else base.config
        settings = source.peft_config[adapter]
        if getattr(settings, "use_dora", False):
            raise HarnessError("export_lora_gguf: DoRA adapters have no llama.cpp form; merge them instead")
        if alpha is None:  # what llama.cpp's alpha / rank must equal: peft's scaling for the configured rank
            alpha = float(settings.lora_alpha) / (settings.r ** 0.5 if settings.use_rslora else settings.r) * settings.r
    else:
        pairs = _pairs_from_state(source, adapter)
    if isinstance(alpha, LoraSettings):
        alpha = float(alpha.alpha)
    if alpha is None or config is None:
        raise HarnessError("export_lora_gguf: a LoRA state dict needs alpha and the base model's config")
    if not pairs:
        raise HarnessError(f"no LoRA tensors for adapter {adapter!r}")
    config = _config_dict(config)
    arch = _arch(config)
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])

    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    planned: list[_Planned] = []
    for module, pair in sorted(pairs.items()):
        name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if name is None or name.startswith(("token_embd", "output.")):
            raise HarnessError(f"LoRA on {module}: not exportable (only the linear layers of the blocks are)")
        a, b = pair.a.float().cpu(), pair.b.float().cpu()
        rank = a.shape[0]
        if pair.scale is not None and abs(pair.scale * rank - float(alpha)) > 1e-6 * float(alpha):
            b = b * (pair.scale * rank / float(alpha))  # this module's own scaling, through llama.cpp's alpha / rank
        transform = _row_transform(config, module + ".weight")
        if transform is not None:
            b = transform(b)  # the base matrix's rows are permuted: so are B's (W = B A)
        for suffix, tensor in ((".lora_a", a), (".lora_b", b)):
            shape = tuple(tensor.shape)
            qtype = wanted if shape[-1] % gguf.GGML_QUANT_SIZES[wanted][0] == 0 else gguf.GGMLQuantizationType.F32
            planned.append(_Planned(name + suffix, shape, qtype, lambda t=tensor: t.contiguous().numpy()))
    return _write_streamed(writer, Path(out), planned)

