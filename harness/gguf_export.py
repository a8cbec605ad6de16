"""GGUF files for llama.cpp: a transformers model folder converted (f32, f16 or q8_0) and the embedded
model's own GGUF (a peft LoRA adapter as a GGUF adapter: harness/gguf_lora.py, on these helpers).

Covers the architectures this project runs: qwen2 (the tiny models, the Qwen2.5 family) and llama.
Metadata keys and tensor names follow llama.cpp's own converters (convert_hf_to_gguf.py,
convert_lora_to_gguf.py), through the `gguf` package's writer, tensor-name map and special-vocab
reader. The vocabulary is written so llama.cpp can load the file; the harness itself tokenizes with the
Hugging Face tokenizer and hands llama.cpp token ids.

Files are written to a temp file beside the target and renamed, so a killed conversion never looks
finished; tensors are streamed one at a time (a 7B model never sits in memory whole).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.errors import HarnessError
from harness.models import TINY_SIZES, TINY_VERSION, cache_dir, embedded_gguf_path, resolve, weights_sha256

GGUF_RECIPE = 1  # bump when the conversion changes, so cached GGUFs are rebuilt
OUT_TYPES = ("f32", "f16", "q8_0")
ARCHS = ("qwen2", "llama")
# The pre-tokenizer regexes llama.cpp knows by name (its converter tells them apart by hashing the tokens
# of a test string, which needs the real vocabulary; the regex itself says the same for any vocabulary).
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "merges.txt", "vocab.json")

logger = logging.getLogger(__name__)


def _gguf():
    try:
        import gguf
    except ImportError:
        raise HarnessError("GGUF export needs the gguf package: pip install 'selfcorrect-harness[llamacpp]' "
                           "(or: pip install gguf)") from None
    logging.getLogger("gguf").setLevel(logging.WARNING)  # it logs every key it writes at INFO
    return gguf


def _out_type(out_type: str):
    gguf = _gguf()
    table = {
        "f32": (gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
        "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
        "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
    }
    if out_type not in table:
        raise HarnessError(f"GGUF type {out_type!r}: use one of {', '.join(OUT_TYPES)}")
    return table[out_type]


def _config_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, (str, Path)):
        return json.loads((Path(config) / "config.json").read_text())
    if isinstance(config, Mapping):
        return dict(config)
    return config.to_dict()  # a transformers PretrainedConfig


def _arch(config: dict[str, Any]):
    gguf = _gguf()
    model_type = config.get("model_type")
    if model_type not in ARCHS:
        raise HarnessError(f"GGUF export supports {', '.join(ARCHS)} models, not {model_type!r}")
    return {"qwen2": gguf.MODEL_ARCH.QWEN2, "llama": gguf.MODEL_ARCH.LLAMA}[model_type]


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """transformers 5 keeps rope settings in `rope_parameters`; older configs in rope_theta/rope_scaling."""
    params = dict(config.get("rope_scaling") or {})
    params.update(config.get("rope_parameters") or {})
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    return params


def _permute(weights, n_head: int, n_head_kv: int | None):
    """HF llama's q/k rows (rotate-half rope) reordered for llama.cpp's llama rope (interleaved pairs),
    as llama.cpp's converter does (LlamaModel.permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _row_transform(config: dict[str, Any], hf_name: str) -> Callable | None:
    """What a tensor's output rows need on the way to llama.cpp (llama's q/k permutation), or None."""
    if config.get("model_type") != "llama":
        return None
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_head)
    if ".q_proj." in hf_name + ".":
        return lambda w: _permute(w, n_head, n_head)
    if ".k_proj." in hf_name + ".":
        return lambda w: _permute(w, n_head, n_kv)
    return None


def _add_hparams(writer, config: dict[str, Any], ftype) -> None:
    """The model's hyperparameters, as llama.cpp's TextModel/LlamaModel converters write them."""
    gguf = _gguf()
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads", config["num_attention_heads"]))
    rope = _rope(config)
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    elif rope_type == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    elif rope_type != "default":
        raise HarnessError(f"GGUF export: rope type {rope_type!r} is not supported (default, linear, yarn)")
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    if (head_dim := config.get("head_dim")) is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if config["model_type"] == "llama":
        writer.add_vocab_size(config["vocab_size"])
        writer.add_rope_dimension_count(head_dim or config["hidden_size"] // config["num_attention_heads"])
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _bpe_pre(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (tokenizer.ggml.pre)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    regexes = [s["pattern"].get("Regex") for s in steps
               if s.get("type") == "Split" and isinstance(s.get("pattern"), dict)]
    if regexes == [QWEN2_REGEX]:
        return "qwen2"
    if regexes == [LLAMA3_REGEX]:
        return "llama-bpe"
    if not regexes and any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps):
        return "gpt-2"  # GPT-2's own regex (the tiny models' tokenizer)
    logger.warning("unknown pre-tokenizer; writing tokenizer.ggml.pre 'default' (llama.cpp's own tokenization "
                   "may differ; the harness tokenizes with the HF tokenizer)")
    return "default"


def _add_vocab(writer, model_dir: Path, vocab_size: int) -> None:
    """Byte-level BPE vocabulary as llama.cpp's _set_vocab_gpt2 writes it: tokens (padded to the model's
    vocab size with unused [PADi]), token types, merges, special token ids, chat template."""
    import transformers

    gguf = _gguf()
    tokenizer_json = model_dir / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise HarnessError(f"{model_dir}: GGUF export needs a tokenizer.json (byte-level BPE)")
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    if (spec.get("model") or {}).get("type") != "BPE":
        raise HarnessError(f"{model_dir}: GGUF export supports BPE tokenizers, not {spec.get('model', {}).get('type')}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    reverse = {i: token for token, i in tokenizer.get_vocab().items()}
    if max(reverse) >= vocab_size:
        raise HarnessError(f"{model_dir}: tokenizer has id {max(reverse)}, the model only {vocab_size} embeddings")
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse or reverse[i] == f"[PAD{i}]":  # (a tokenizer read from a GGUF has them)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        tokens.append(token)
        if token in added:
            types.append(gguf.TokenType.CONTROL if decoder[i].special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    # the pre-tokenizer as loaded, not as tokenizer.json has it: transformers' Qwen2Tokenizer puts Qwen2's
    # regex in front of any qwen2 model's vocabulary (the tiny model's included)
    writer.add_tokenizer_pre(_bpe_pre(json.loads(tokenizer.backend_tokenizer.to_str())))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if "bos" not in special.add_special_token:  # say what the HF tokenizer does, not llama.cpp's default
        bos = tokenizer.bos_token_id
        special.add_special_token["bos"] = bos is not None and tokenizer.encode("a")[:1] == [bos]
    special.add_to_gguf(writer, quiet=True)


def _safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / n for n in names]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise HarnessError(f"{model_dir}: no safetensors weights to convert")
    return files


@dataclass
class _Planned:
    name: str  # the GGUF name
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType
    load: Callable[[], Any]  # -> float32 numpy array, already transformed


def _qtype_for(name: str, shape: tuple[int, ...], wanted):
    """llama.cpp's rules: 1-D tensors, norms and anything but a weight stay f32; q8_0 needs rows that are
    whole blocks (otherwise f16, as llama.cpp's converter falls back)."""
    gguf = _gguf()
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return gguf.GGMLQuantizationType.F32
    if wanted == gguf.GGMLQuantizationType.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[wanted][0] != 0:
        return gguf.GGMLQuantizationType.F16
    return wanted


def _encode(data, qtype):
    """A float32 array in the GGUF type, and the (numpy dtype, nbytes) add_tensor_info wants."""
    gguf = _gguf()
    import numpy as np

    if qtype == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)


def _info(shape: tuple[int, ...], qtype) -> tuple[tuple[int, ...], Any, int]:
    """(shape as add_tensor_info takes it, numpy dtype, bytes) for a tensor of `shape` stored as `qtype`."""
    import numpy as np

    gguf = _gguf()
    if qtype == gguf.GGMLQuantizationType.F32:
        return shape, np.dtype(np.float32), int(np.prod(shape)) * 4
    if qtype == gguf.GGMLQuantizationType.F16:
        return shape, np.dtype(np.float16), int(np.prod(shape)) * 2
    byte_shape = tuple(gguf.quant_shape_to_byte_shape(shape, qtype))
    return byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape))


def _write_streamed(writer, out: Path, planned: list[_Planned]) -> Path:
    """Header, metadata and tensor infos first, then each tensor loaded, converted and written in turn,
    into a temp file renamed to `out` at the end."""
    for t in planned:
        shape, dtype, nbytes = _info(t.shape, t.qtype)
        writer.add_tensor_info(t.name, shape, dtype, nbytes, raw_dtype=t.qtype)
    return _atomic(out, lambda tmp: _finish(writer, tmp, planned))


def _finish(writer, tmp: Path, planned: list[_Planned]) -> None:
    writer.write_header_to_file(path=tmp)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in planned:
        writer.write_tensor_data(_encode(t.load(), t.qtype))
    writer.close()


def _atomic(out: Path, write: Callable[[Path], None]) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _tensor_loader(path: Path, key: str, transform: Callable | None) -> Callable[[], Any]:
    def load():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            data = fh.get_tensor(key).float()  # bf16 has no numpy dtype: through torch
        if transform is not None:
            data = transform(data)
        return data.numpy()

    return load


def convert_to_gguf(model_dir: Path, out: Path, out_type: str = "f32") -> Path:
    """Write `out`, a GGUF llama.cpp loads, from a transformers folder (config.json, safetensors,
    tokenizer.json) of a qwen2 or llama model; `out_type` f32, f16 or q8_0 (norms and biases stay f32).
    Tied embeddings: no output.weight, llama.cpp then uses token_embd as the output matrix."""
    gguf = _gguf()
    from safetensors import safe_open

    model_dir = Path(model_dir)
    ftype, wanted = _out_type(out_type)
    config = _config_dict(model_dir)
    arch = _arch(config)
    tied = config.get("tie_word_embeddings", False)
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])

    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(config.get("_name_or_path") or model_dir.name)
    _add_hparams(writer, config, ftype)
    _add_vocab(writer, model_dir, config["vocab_size"])

    planned: list[_Planned] = []
    for path in _safetensors_files(model_dir):
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                if key.endswith(".rotary_emb.inv_freq"):
                    continue
                if key == "lm_head.weight" and tied:
                    continue  # the same matrix as the embeddings
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise HarnessError(f"{model_dir}: tensor {key} has no GGUF name for {config['model_type']}")
                shape = tuple(fh.get_slice(key).get_shape())
                planned.append(_Planned(name, shape, _qtype_for(name, shape, wanted),
                                        _tensor_loader(path, key, _row_transform(config, key))))
    if not any(t.name == "token_embd.weight" for t in planned):
        raise HarnessError(f"{model_dir}: no token embeddings among the weights")
    return _write_streamed(writer, Path(out), planned)


# --- cached GGUFs for model specs --------------------------------------------------------------------


def _local_folder(spec: str, location: Path | str) -> Path:
    if not isinstance(location, str):
        return Path(location)
    from huggingface_hub import snapshot_download

    from harness.data import hub_reachable

    try:
        return Path(snapshot_download(location, local_files_only=True))
    except Exception:  # noqa: BLE001 (not in the local cache: any of several hub errors)
        if not hub_reachable():
            raise HarnessError(f"model {spec!r}: not in the local Hugging Face cache and the hub is unreachable") from None
        return Path(snapshot_download(location, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"]))


def _source_hash(folder: Path) -> str:
    digest = hashlib.sha256(f"recipe {GGUF_RECIPE}\n".encode())
    for name in ("config.json", *TOKENIZER_FILES):
        if (folder / name).is_file():
            digest.update(name.encode() + b":" + hashlib.sha256((folder / name).read_bytes()).digest())
    digest.update(weights_sha256(folder).encode())
    return digest.hexdigest()[:12]


def gguf_for(spec: str, out_type: str | None = None) -> Path:
    """A GGUF for a model spec (anything `harness.models.resolve` takes), converted once into
    cache_dir()/gguf/<name>-<type>-<hash>.gguf (the hash covers config, tokenizer, weights and this
    converter's recipe). `out_type` None: the model's own GGUF where it has one (the embedded model, a
    .gguf file), f32 otherwise; f32, f16 or q8_0: that type, converted (for the embedded model, from
    its dequantized float32 folder)."""
    if out_type is None:
        if spec == "embedded":
            return embedded_gguf_path()
        path = Path(spec).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise HarnessError(f"{spec}: no such model file")
            return path
        out_type = "f32"
    _out_type(out_type)
    location, gguf_file, _ = resolve(spec)
    if gguf_file:
        raise HarnessError(f"{spec}: already a GGUF; use it as it is (out_type None)")
    folder = _local_folder(spec, location)
    if spec in TINY_SIZES:
        name = f"{spec}-v{TINY_VERSION}"
    elif spec == "embedded":
        name = "embedded"
    elif isinstance(location, str):
        name = location.replace("/", "--")
    else:
        name = folder.resolve().name
    final = cache_dir() / "gguf" / f"{name}-{out_type}-{_source_hash(folder)}.gguf"
    if final.is_file():
        return final
    return convert_to_gguf(folder, final, out_type)
