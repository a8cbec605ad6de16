from __future__ import annotations

import os

from shared_fixtures import data_dir, pool  # noqa: F401  (fixtures shared with tests_vllm/)

# `--dtype auto` means bf16 on CPUs with native bf16 (AVX512-BF16, AMX) and float32 elsewhere: the suite
# keeps float32 on every CPU (subprocesses inherit this), so what it asserts does not depend on the CPU
# CI draws. tests/test_models.py checks the rule itself; bf16 paths are tested with explicit dtypes.
os.environ.setdefault("HARNESS_AUTO_BF16_CPU", "0")
