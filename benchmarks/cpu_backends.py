"""Benchmark: the harness against what a CPU user would run instead, in one process on the machine at hand.

Workload (the speed issue's): the embedded model, the first 32 GSM8K test problems, greedy, at most 256
new tokens.
- plain `generate`: transformers `model.generate` on the 32 first-attempt prompts at batch 32, in
  transformers' default dtype (what `from_pretrained` gives without a dtype: the model's config dtype,
  float32 for the embedded model's folder), and again in the harness's `auto` dtype (bf16 on CPUs with
  native bf16) when that differs: a script written with `dtype=torch.bfloat16` on such a CPU;
- raw llama.cpp: the same 32 prompts as 32 parallel sequences in one llama.cpp context on the model's
  GGUF, greedy, the loop a script on llama-cpp-python's low-level API would write;
- `harness eval --turns 2`: both attempts of the same 32 problems through the harness (rollout driver,
  grading, store) with the backend asked for (default: auto).
- with `--requantize q8_0,q4_0`: raw llama.cpp again on the GGUF requantized to each type (other weights:
  what a llama.cpp user could trade for speed; Q4_0 runs llama.cpp's repacked 8x8 kernels on x86).
Prints the CPU and its flags, generated tokens/s of each, the ratio of the harness to each and of each
to plain `generate` in transformers' default dtype.

    python benchmarks/cpu_backends.py                     # all three, backend auto
    python benchmarks/cpu_backends.py --backend llamacpp  # the harness on llama.cpp
    python benchmarks/cpu_backends.py --skip harness --requantize q8_0,q4_0   # llama.cpp's speed ceiling
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import torch


def cpu_line() -> str:
    """The CPU's model name and the flags that decide the fast path (bf16, AVX512, AMX)."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name}, {os.cpu_count()} cores, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"


def transformers_default_dtype(path) -> str:
    """The dtype `from_pretrained(path)` loads in without a dtype argument (transformers 5: the config's)."""
    from transformers import AutoConfig

    dtype = getattr(AutoConfig.from_pretrained(path), "dtype", None) or torch.float32
    return str(dtype).removeprefix("torch.")


def plain_generate(loaded, prompts: list[list[int]], max_new_tokens: int, eos: list[int]) -> tuple[float, int]:
    """One left-padded `generate` over all prompts (the batch is the whole workload)."""
    tok = loaded.tokenizer
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    start = time.perf_counter()
    with torch.inference_mode():
        out = loaded.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    seconds = time.perf_counter() - start
    generated = 0
    for row in out[:, width:].tolist():
        generated += next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
    return seconds, generated


def raw_llamacpp(gguf: Path, prompts: list[list[int]], max_new_tokens: int, eos: list[int]) -> tuple[float, int]:
    """All prompts as parallel sequences of one context: prefill each, then one batched decode per step
    with one token per live sequence, greedy argmax of its logits."""
    import llama_cpp as lc
    import numpy as np

    lc.llama_backend_init()
    from harness.rollout.llamacpp_lib import model_params

    mparams = model_params(lc)  # the harness's own load (no AMX repacking: it crashes on the first decode)
    model = lc.llama_model_load_from_file(str(gguf).encode(), mparams)
    n = len(prompts)
    cparams = lc.llama_context_default_params()
    cparams.n_seq_max = n
    cparams.n_ctx = n * (max(len(p) for p in prompts) + max_new_tokens)
    cparams.n_batch = cparams.n_ubatch = 512
    cparams.n_threads = cparams.n_threads_batch = len(os.sched_getaffinity(0))
    ctx = lc.llama_init_from_model(model, cparams)
    vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    batch = lc.llama_batch_init(max(512, n), 0, n)

    def decode(entries: list[tuple[int, int, int, bool]]) -> dict[int, int]:
        """(token, pos, seq, wants logits) entries in chunks of n_batch; {seq: batch index of its logits}."""
        rows: dict[int, np.ndarray] = {}
        for start in range(0, len(entries), 512):
            chunk = entries[start : start + 512]
            batch.n_tokens = len(chunk)
            for i, (token, pos, seq, logits) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
                batch.seq_id[i][0] = seq
            if lc.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            for i, (_, _, seq, logits) in enumerate(chunk):
                if logits:
                    rows[seq] = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, i), shape=(vocab,)).copy()
        return {seq: int(row.argmax()) for seq, row in rows.items()}

    start = time.perf_counter()
    entries = [(t, pos, seq, pos == len(p) - 1) for seq, p in enumerate(prompts) for pos, t in enumerate(p)]
    nxt = decode(entries)
    lengths = {seq: len(p) for seq, p in enumerate(prompts)}
    counts = {seq: 0 for seq in nxt}
    live = set(nxt)
    while live:
        for seq in list(live):
            counts[seq] += 1
            if nxt[seq] in eos or counts[seq] >= max_new_tokens:
                live.discard(seq)
        if not live:
            break
        step = [(nxt[seq], lengths[seq], seq, True) for seq in sorted(live)]
        for seq in live:
            lengths[seq] += 1
        nxt.update(decode(step))
    seconds = time.perf_counter() - start
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return seconds, sum(counts.values())


REQUANTIZE = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL"}


def requantized(gguf: Path, kind: str, folder: Path) -> Path:
    """`gguf` requantized to `kind` by llama.cpp's own quantizer (from its quantized weights, as
    `llama-quantize --allow-requantize` does)."""
    import ctypes

    import llama_cpp as lc

    out = folder / f"{gguf.stem}-{kind}.gguf"
    params = lc.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = getattr(lc, REQUANTIZE[kind]), True, os.cpu_count() or 1
    if lc.llama_model_quantize(str(gguf).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"llama.cpp could not requantize {gguf.name} to {kind}")
    return out


def short(row: str) -> str:
    """A row's name without its details: "raw llama.cpp, 32 sequences (x.gguf)" -> "raw llama.cpp"."""
    return re.split(r" \(|, \d+ sequences", row)[0]


def harness_eval(args, out: Path) -> tuple[float, int, str]:
    from harness.evaluate import EvalConfig, evaluate
    from harness.sampling import Sampling
    from harness.store import RunStore

    config = EvalConfig(task="gsm8k", model=args.model, limit=args.problems, turns=2, backend=args.backend,
                        sampling=Sampling(max_new_tokens=args.max_new_tokens, temperature=0.0), out=str(out))
    start = time.perf_counter()
    evaluate(config)
    seconds = time.perf_counter() - start
    samples = RunStore(out).load_samples()
    tokens = sum(s["completion_tokens"] for r in samples.values() for s in r["steps"])
    return seconds, tokens, config.rollout_backend()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--backend", default="auto", help="the harness's backend: auto, hf, llamacpp")
    parser.add_argument("--skip", default="", help="comma-separated: plain, raw, harness")
    parser.add_argument("--requantize", default="", help=f"comma-separated GGUF types for extra raw llama.cpp rows: {', '.join(REQUANTIZE)}")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    kinds = [k for k in args.requantize.split(",") if k]
    if unknown := [k for k in kinds if k not in REQUANTIZE]:
        parser.error(f"unknown --requantize type(s): {', '.join(unknown)}; known: {', '.join(REQUANTIZE)}")

    from harness.gguf_export import gguf_for
    from harness.method import get_method
    from harness.models import load_model
    from harness.rollout.vllm_generator import model_eos_ids
    from harness.task import get_task

    print(f"CPU: {cpu_line()}")
    loaded = load_model(args.model, "auto")
    task, method = get_task("gsm8k"), get_method("base")
    items = task.load("test")[: args.problems]
    prompts = [loaded.tokenizer.apply_chat_template(method.first_request(task, item).messages,
                                                    add_generation_prompt=True, tokenize=True, return_dict=False)
               for item in items]
    prompts = [list(p["input_ids"] if isinstance(p, dict) else p) for p in prompts]
    eos = model_eos_ids(str(loaded.path), loaded.tokenizer)
    print(f"workload: {args.model}, first {len(items)} GSM8K test problems, greedy, <= {args.max_new_tokens} new tokens")
    rows: dict[str, tuple[float, int]] = {}
    if "plain" not in skip:
        default = transformers_default_dtype(loaded.path)
        if default != loaded.dtype:
            rows[f"plain generate, batch {len(prompts)}, {loaded.dtype} (harness auto)"] = \
                plain_generate(loaded, prompts, args.max_new_tokens, eos)
            del loaded
            loaded = load_model(args.model, default)
        rows[f"plain generate, batch {len(prompts)}, {loaded.dtype} (transformers' default)"] = \
            plain_generate(loaded, prompts, args.max_new_tokens, eos)
    del loaded
    if "raw" not in skip:
        gguf = gguf_for(args.model)
        rows[f"raw llama.cpp, {len(prompts)} sequences ({gguf.name})"] = raw_llamacpp(gguf, prompts, args.max_new_tokens, eos)
        with tempfile.TemporaryDirectory() as tmp:
            for kind in kinds:
                rows[f"raw llama.cpp requantized {kind}, {len(prompts)} sequences"] = raw_llamacpp(
                    requantized(gguf, kind, Path(tmp)), prompts, args.max_new_tokens, eos)
    if "harness" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            seconds, tokens, backend = harness_eval(args, Path(tmp) / "run")
        rows[f"harness eval --turns 2 (backend {backend})"] = (seconds, tokens)
    speed = {}
    for name, (seconds, tokens) in rows.items():
        speed[name] = tokens / seconds
        print(f"{name:58s} {seconds:8.1f} s {tokens:7d} tokens {speed[name]:7.1f} generated tokens/s")
    ours = next((v for k, v in speed.items() if k.startswith("harness")), None)
    if ours is not None:
        for name, value in speed.items():
            if not name.startswith("harness"):
                print(f"harness / {short(name)}: {ours / value:.2f}x")
    plain = next((v for k, v in speed.items() if k.endswith("(transformers' default)")), None)
    if plain is not None:
        for name, value in speed.items():
            if not name.endswith("(transformers' default)"):
                print(f"{short(name)} / plain generate (transformers' default): {value / plain:.2f}x")


if __name__ == "__main__":
    main()
