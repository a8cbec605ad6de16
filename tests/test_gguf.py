"""GGUF export (harness/gguf_export.py): tiny models and a peft LoRA converted to GGUF, read back with
gguf's reader, then run in llama.cpp (llama-cpp-python's low-level API) against transformers.

Tolerances: at f32 llama.cpp and torch compute the same function with different kernels (summation
order, fused vs separate softmax, its rope), so logits agree to float32 rounding: measured max abs diff
5e-7 on the tiny models (logits up to ~0.6; 3e-4 on Qwen2.5-0.5B, logits up to ~30), asserted < 1e-3.
q8_0 rounds weights to 8 bits per 32-value block and llama.cpp quantizes the activations of those
matmuls to 8 bits too: measured max abs diff 1e-2 (f16: 3.5e-4), asserted < 0.05.
"""

from __future__ import annotations

import ctypes
import hashlib

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (the llamacpp extra)")

from harness.gguf_export import convert_to_gguf, gguf_for  # noqa: E402
from harness.gguf_lora import export_lora_gguf  # noqa: E402
from harness.models import tiny_model_dir  # noqa: E402

PROMPTS = ["The answer is 42.", "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n",
           "first then so we have total each"]
F32_TOL = 1e-3  # f32: the same math, other summation order (measured 5e-7)
Q8_TOL = 5e-2  # q8_0 weights and activations (measured 1e-2)


def _hf(name: str):
    import transformers

    folder = tiny_model_dir(name)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return folder, model, tokenizer


def _hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


class LlamaCpp:
    """One llama.cpp model and context, fed token ids (never llama.cpp's tokenizer), f32 KV cache."""

    def __init__(self, path, lora=None, n_ctx: int = 512):
        llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the llamacpp extra)")
        self.ll = llama_cpp
        llama_cpp.llama_backend_init()
        from harness.rollout.llamacpp_lib import model_params

        params = model_params(llama_cpp)  # as the backend loads it (no AMX repacking, which crashes)
        params.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        assert self.model, f"llama.cpp could not load {path}"
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_ctx
        cparams.n_threads = cparams.n_threads_batch = 2
        cparams.type_k = cparams.type_v = llama_cpp.GGML_TYPE_F32  # default f16 cache would cost precision
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        assert self.ctx
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.adapter = None
        if lora is not None:
            self.adapter = llama_cpp.llama_adapter_lora_init(self.model, str(lora).encode())
            assert self.adapter, f"llama.cpp could not load the adapter {lora}"
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.adapter)
            assert llama_cpp.llama_set_adapters_lora(self.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)) == 0
        self.n_past = 0

    def reset(self) -> None:
        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)
        self.n_past = 0

    def feed(self, ids: list[int]) -> np.ndarray:
        """Logits at every fed position, continuing the sequence."""
        batch = self.ll.llama_batch_init(len(ids), 0, 1)
        try:
            batch.n_tokens = len(ids)
            for i, tok in enumerate(ids):
                batch.token[i] = tok
                batch.pos[i] = self.n_past + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1
            assert self.ll.llama_decode(self.ctx, batch) == 0
            self.n_past += len(ids)
            return np.stack([np.ctypeslib.as_array(self.ll.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,)).copy()
                             for i in range(len(ids))])
        finally:
            self.ll.llama_batch_free(batch)

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokenization (add_special as the GGUF says, special tokens parsed)."""
        data = text.encode()
        out = (self.ll.llama_token * (len(data) + 8))()
        n = self.ll.llama_tokenize(self.ll.llama_model_get_vocab(self.model), data, len(data), out, len(out), True, True)
        assert n >= 0
        return list(out[:n])

    def close(self) -> None:
        if self.adapter is not None:
            self.ll.llama_adapter_lora_free(self.adapter)
        self.ll.llama_free(self.ctx)
        self.ll.llama_model_free(self.model)


def _max_diff(hf_model, runner: LlamaCpp, tokenizer) -> float:
    worst = 0.0
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        runner.reset()
        worst = max(worst, float(np.abs(runner.feed(ids) - _hf_logits(hf_model, ids)).max()))
    return worst


# --- without llama.cpp: the file itself ----------------------------------------------------------------


@pytest.mark.parametrize("name,arch", [("tiny-random", "qwen2"), ("tiny-random-llama", "llama")])
def test_converted_file_reads_back(tmp_path, name, arch):
    folder, model, tokenizer = _hf(name)
    path = convert_to_gguf(folder, tmp_path / "m.gguf")
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    config = model.config
    assert fields["general.architecture"] == arch
    assert fields[f"{arch}.block_count"] == config.num_hidden_layers
    assert fields[f"{arch}.embedding_length"] == config.hidden_size
    assert fields[f"{arch}.feed_forward_length"] == config.intermediate_size
    assert fields[f"{arch}.attention.head_count"] == config.num_attention_heads
    assert fields[f"{arch}.attention.head_count_kv"] == config.num_key_value_heads
    assert fields[f"{arch}.context_length"] == config.max_position_embeddings
    assert fields[f"{arch}.rope.freq_base"] == pytest.approx(10000.0)
    assert fields[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(config.rms_norm_eps)
    assert fields["general.file_type"] == gguf.LlamaFileType.ALL_F32
    # transformers loads a qwen2 model's tokenizer with Qwen2's pre-tokenizer regex; the llama one keeps GPT-2's
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == {"qwen2": "qwen2", "llama": "gpt-2"}[arch]
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == config.vocab_size and tokens[tokenizer.eos_token_id] == "<|im_end|>"
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert fields["tokenizer.ggml.padding_token_id"] == tokenizer.pad_token_id
    assert fields["tokenizer.ggml.token_type"][tokenizer.convert_tokens_to_ids("<|im_start|>")] == gguf.TokenType.CONTROL
    assert len(fields["tokenizer.ggml.merges"]) > 0
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp uses token_embd
    embd = tensors["token_embd.weight"]
    np.testing.assert_array_equal(np.asarray(embd.data), model.model.embed_tokens.weight.detach().numpy())
    if arch == "qwen2":  # no permutation: the matrix as it is
        np.testing.assert_array_equal(np.asarray(tensors["blk.1.attn_q.weight"].data),
                                      model.model.layers[1].self_attn.q_proj.weight.detach().numpy())
        assert "blk.0.attn_q.bias" in tensors


def test_q8_0_and_f16_types(tmp_path):
    folder, _, _ = _hf("tiny-random")
    for out_type, ftype, qtype in (("q8_0", gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
                                   ("f16", gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16)):
        reader = gguf.GGUFReader(str(convert_to_gguf(folder, tmp_path / f"{out_type}.gguf", out_type)))
        assert reader.fields["general.file_type"].contents() == ftype
        types = {t.name: t.tensor_type for t in reader.tensors}
        assert types["blk.0.ffn_down.weight"] == qtype and types["token_embd.weight"] == qtype
        assert types["blk.0.attn_norm.weight"] == types["blk.0.attn_q.bias"] == gguf.GGMLQuantizationType.F32


def test_gguf_for_caches_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    first = gguf_for("tiny-random")
    assert first.parent == tmp_path / "gguf" and first.name.startswith("tiny-random-v1-f32-")
    mtime = first.stat().st_mtime_ns
    assert gguf_for("tiny-random", "f32") == first and first.stat().st_mtime_ns == mtime
    assert gguf_for("tiny-random", "q8_0") != first
    assert not list((tmp_path / "gguf").glob(".*"))  # no temp files left


def _peft_tiny(name: str = "tiny-random"):
    from harness.lora import LoraSettings, attach_lora

    folder, model, tokenizer = _hf(name)
    settings = LoraSettings(rank=4, alpha=8)
    peft_model = attach_lora(model, settings, seed=0)
    torch.manual_seed(1)
    with torch.no_grad():
        for param_name, param in peft_model.named_parameters():
            if "lora_B" in param_name:
                param.normal_(0, 0.2)  # peft starts B at zero: the adapter would change nothing
    return folder, peft_model.eval(), tokenizer, settings


def test_lora_file_reads_back(tmp_path):
    _, peft_model, _, settings = _peft_tiny()
    path = export_lora_gguf(peft_model, tmp_path / "lora.gguf")
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "qwen2"
    assert fields["adapter.lora.alpha"] == pytest.approx(settings.alpha)
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 * 7 * 2  # 7 target modules, 2 layers, A and B
    layer = peft_model.base_model.model.model.layers[0].mlp.down_proj
    np.testing.assert_array_equal(np.asarray(tensors["blk.0.ffn_down.weight.lora_a"].data),
                                  layer.lora_A["default"].weight.detach().numpy())
    np.testing.assert_array_equal(np.asarray(tensors["blk.0.ffn_down.weight.lora_b"].data),
                                  layer.lora_B["default"].weight.detach().numpy())
    # the same from the state dict the trainer checkpoints, with alpha from LoraSettings
    state = {k: v for k, v in peft_model.named_parameters() if "lora_" in k}
    again = export_lora_gguf(state, tmp_path / "again.gguf", alpha=settings, config=peft_model.config)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()


# --- in llama.cpp ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-llama"])
def test_f32_logits_and_greedy_match_transformers(tmp_path, name):
    folder, model, tokenizer = _hf(name)
    runner = LlamaCpp(convert_to_gguf(folder, tmp_path / "m.gguf"))
    try:
        assert _max_diff(model, runner, tokenizer) < F32_TOL
        # the vocabulary, merges and pre-tokenizer written make llama.cpp tokenize as the HF tokenizer does
        # (the harness never asks it to, but a wrong vocabulary would show here)
        for prompt in PROMPTS:
            assert runner.tokenize(prompt) == tokenizer.encode(prompt)
        ids = tokenizer.encode(PROMPTS[1], add_special_tokens=False)
        runner.reset()
        logits = runner.feed(ids)[-1]
        ours = []
        for _ in range(16):  # greedy, one token at a time through the KV cache
            ours.append(int(np.argmax(logits)))
            logits = runner.feed([ours[-1]])[0]
        with torch.no_grad():
            hf = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, min_new_tokens=16,
                                eos_token_id=None, pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        assert ours == hf
    finally:
        runner.close()


def test_q8_0_logits_close(tmp_path):
    folder, model, tokenizer = _hf("tiny-random")
    runner = LlamaCpp(convert_to_gguf(folder, tmp_path / "q8.gguf", "q8_0"))
    try:
        assert _max_diff(model, runner, tokenizer) < Q8_TOL
    finally:
        runner.close()


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-llama"])
def test_lora_in_llamacpp_matches_peft(tmp_path, name):
    folder, peft_model, tokenizer, _ = _peft_tiny(name)
    base_gguf = convert_to_gguf(folder, tmp_path / "base.gguf")
    runner = LlamaCpp(base_gguf, lora=export_lora_gguf(peft_model, tmp_path / "lora.gguf"))
    try:
        ids = tokenizer.encode(PROMPTS[0], add_special_tokens=False)
        with peft_model.disable_adapter():
            base = _hf_logits(peft_model, ids)
        assert np.abs(_hf_logits(peft_model, ids) - base).max() > 0.05  # the adapter does change the logits
        assert _max_diff(peft_model, runner, tokenizer) < F32_TOL
    finally:
        runner.close()


def test_embedded_gguf_materializes_once(tmp_path, monkeypatch):
    from harness import models

    try:
        models.embedded_parts()
    except models.HarnessError as err:
        pytest.skip(f"embedded model packages absent: {err}")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    path = gguf_for("embedded")
    assert path == models.embedded_gguf_path() == tmp_path / "gguf" / f"embedded-{models.EMBEDDED_SHA256[:12]}.gguf"
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    assert digest.hexdigest() == models.EMBEDDED_SHA256
    mtime = path.stat().st_mtime_ns
    assert models.embedded_gguf_path() == path and path.stat().st_mtime_ns == mtime  # not written again
    assert [p.name for p in (tmp_path / "gguf").iterdir()] == [path.name]
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == "qwen2"
