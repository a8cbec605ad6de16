"""The CUDA path (issue 25): run by `make gpu-check` on a machine with a GPU, skipped elsewhere.

Everything here is built on the spot (tiny random models, the procedural countdown and toy-digit tasks),
so a GPU machine without a network runs it. HARNESS_GPU_CHECK_DEVICE=cpu runs the same bodies on the
CPU (to try them before a GPU is at hand); what they measure goes into the summary through
`record_property`.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import toy_task  # noqa: F401  (registers the toy-digit task)
from harness.checkpoint import latest_checkpoint, load_state
from harness.method import get_method
from harness.models import load_model
from harness.rollout import EngineGenerator, HFGenerator, run_episodes
from harness.sampling import SamplingParams
from harness.task import get_task
from harness.training.config import load_train_config
from harness.training.loop import train
from wide_models import widen

# cuBLAS is deterministic for a fixed shape only with a fixed workspace; it reads this when first used.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
DEVICE = os.environ.get("HARNESS_GPU_CHECK_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE is None, reason="no CUDA device (HARNESS_GPU_CHECK_DEVICE=cpu runs these on the CPU)")]

# A greedy flip between two batch shapes is a rounding event, not a bug, when the two tokens' logits lie
# closer than bf16 resolves: 8 significant bits, so one op moves a logit by up to 2^-8 of its size, and
# two layers of matmuls, norms and attention compound that. 2^-5 of the largest logit bounds it.
NEAR_TIE = 2.0 ** -5


@pytest.fixture(scope="module", params=["tiny-random", "tiny-random-llama"])
def wide_bf16(request):
    """A tiny model in bf16 on the device, weights drawn wide enough that greedy text varies by prompt and
    step (at the stored init every row repeats one token, which would make any two paths agree)."""
    return widen(load_model(request.param, dtype="bfloat16", device=DEVICE))


def _with_stop(generator, stop: int):
    """End turns at `stop` too (as if the model said EOS there), so rows finish at different steps."""
    ids = generator.eos_ids() + [stop]
    generator.eos_ids = lambda: ids
    return generator


def _divergence_is_a_near_tie(loaded, prompt: list[int], left: list[int], right: list[int]) -> float:
    """The two paths' tokens at their first difference, as a share of the largest logit there (recomputed
    in float32 from the same bf16 weights, one row, no padding)."""
    j = next(i for i, (a, b) in enumerate(zip(left, right)) if a != b)
    ids = torch.tensor([prompt + left[:j]], device=loaded.model.device)
    with torch.no_grad(), torch.autocast(loaded.model.device.type, enabled=False):
        logits = loaded.model.float()(input_ids=ids).logits[0, -1]
    loaded.model.to(torch.bfloat16)
    return float((logits[left[j]] - logits[right[j]]).abs() / logits.abs().max())


def test_engine_bf16_greedy_episodes_equal_plain_generate(wide_bf16, pool, record_property):
    task, method = get_task("countdown"), get_method("self-refine")
    items = task.load("test")[:12]
    params = SamplingParams(max_new_tokens=24)
    first = HFGenerator(wide_bf16.model, wide_bf16.tokenizer, 12).generate([task.prompt(i) for i in items], params)
    streams = [c.token_ids for (c,) in first]
    # the token that ends the rows at the most different steps (found from the plain path's own output)
    stop = max(sorted({t for s in streams for t in s[1:]}),
               key=lambda t: len({s.index(t) if t in s else None for s in streams} - {0}))
    plain = run_episodes(task, method, items, _with_stop(HFGenerator(wide_bf16.model, wide_bf16.tokenizer, 5), stop),
                         params, 2, pool)
    engine = _with_stop(EngineGenerator(wide_bf16.model, wide_bf16.tokenizer, 4), stop)
    fast = run_episodes(task, method, items, engine, params, 2, pool)
    attempts = [(p, f) for a, b in zip(plain, fast) for p, f in zip(a.attempts, b.attempts)]
    same = sum(p.token_ids == f.token_ids for p, f in attempts)
    ties = [_divergence_is_a_near_tie(wide_bf16, list(p.prompt_ids), list(p.token_ids), list(f.token_ids))
            for p, f in attempts if p.token_ids != f.token_ids and p.prompt_ids == f.prompt_ids]
    record_property("identical_attempts", f"{same}/{len(attempts)}")
    record_property("flip_margins", [round(t, 5) for t in ties])
    assert {c.completion_tokens for (c,) in first} and max(engine.last_stats.rows_per_step) == 4
    # Every difference is a rounding flip between near-tied tokens (first seen on an H200: 16/24 and 18/24
    # attempts identical, the 9 flips at 0.00001-0.024 of the largest logit); the wide random weights make
    # near-ties common, so how many attempts stay identical is a loose bound, the margin is the test.
    assert same == len(attempts) or ties, "attempts differ but no first attempt does"
    assert all(t <= NEAR_TIE for t in ties), ties
    assert same >= len(attempts) // 2, (same, len(attempts))


def test_rows_follow_free_device_memory(record_property):
    if DEVICE == "cpu":
        pytest.skip("the CUDA memory query is what this checks")
    from harness.rollout import memory

    loaded = load_model("tiny-random", dtype="bfloat16", device=DEVICE)
    per_row = memory.kv_bytes_per_token(loaded.model) * memory.ROW_TOKENS
    assert EngineGenerator(loaded.model, loaded.tokenizer).batch_size == memory.ACCELERATOR_MAX_ROWS  # H100: plenty
    free, _ = torch.cuda.mem_get_info()
    want = 40  # rows a quarter of what is left should hold
    filler = torch.empty(int(free - want * per_row / memory.MEMORY_SHARE), dtype=torch.uint8, device=DEVICE)
    try:
        rows = EngineGenerator(loaded.model, loaded.tokenizer).batch_size
        record_property("rows_with_little_free", rows)
        assert 30 <= rows <= want, rows
        out = EngineGenerator(loaded.model, loaded.tokenizer).generate(
            [[{"role": "user", "content": f"count {i}"}] for i in range(rows + 8)], SamplingParams(max_new_tokens=8))
        assert len(out) == rows + 8
    finally:
        del filler
        torch.cuda.empty_cache()


@pytest.fixture
def deterministic():
    """Deterministic kernels for the training comparisons: the fused attention kernels' backward passes
    add with atomics (an order that varies run to run), so attention goes through SDPA's math kernel."""
    kernels = ("flash", "mem_efficient", "cudnn")
    was = {k: getattr(torch.backends.cuda, f"{k}_sdp_enabled")() for k in kernels}
    torch.use_deterministic_algorithms(True, warn_only=True)
    for k in kernels:
        getattr(torch.backends.cuda, f"enable_{k}_sdp")(False)
    yield
    torch.use_deterministic_algorithms(False)
    for k in kernels:
        getattr(torch.backends.cuda, f"enable_{k}_sdp")(was[k])


def _config(method: str, out, **sets):
    pairs = [f"{k}={v}" for k, v in {"task": "toy-digit", "max_new_tokens": 4, "problems_per_step": 4,
                                      "samples_per_problem": 2, "device": DEVICE, **sets}.items()]
    return load_train_config("cpu-tiny", None, pairs, {"method": method, "out": str(out)})


def _weights(run) -> dict[str, torch.Tensor]:
    return load_state(latest_checkpoint(run), "weights")


@pytest.mark.parametrize("method", ["score", "a2c2stage"])
def test_steps_with_gradient_checkpointing_equal_steps_without(tmp_path, method, deterministic, record_property):
    # 8 problems x 4 samples of 2 tokens: at a random model's ~5% reward, some group has a reward to learn from
    sets = dict(max_steps=2, problems_per_step=8, samples_per_problem=4, max_new_tokens=2, batch_size=32)
    plain = train(_config(method, tmp_path / "plain", **sets))
    checkpointed = train(_config(method, tmp_path / "gc", gradient_checkpointing="true", **sets))
    log = json.loads((checkpointed / "log.jsonl").read_text().splitlines()[-1])
    assert all(torch.isfinite(torch.tensor(v)) for k, v in log.items() if isinstance(v, float))
    a, b = _weights(plain), _weights(checkpointed)
    gap = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    record_property("max_weight_gap", gap)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in b.items())  # the step moved the adapters
    # Recomputed activations run the same kernels on the same inputs, so the updates agree (0.0 on the CPU);
    # 1e-6 leaves room for autograd summing a weight's gradient contributions in another order.
    assert gap <= 1e-6, gap


def test_resume_on_the_device_ends_with_the_same_weights(tmp_path, deterministic, record_property):
    straight = train(_config("score", tmp_path / "straight", max_steps=4))
    interrupted = tmp_path / "interrupted"
    train(_config("score", interrupted, max_steps=2))
    train(_config("score", interrupted, max_steps=4), resume=True)
    assert latest_checkpoint(straight).name == latest_checkpoint(interrupted).name == "step-000004"
    a, b = _weights(straight), _weights(interrupted)
    gap = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    record_property("max_weight_gap", gap)
    assert gap <= 1e-6, gap  # deterministic kernels: exact (0.0 on the CPU), 1e-6 as for checkpointing
