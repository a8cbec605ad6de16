#!/usr/bin/env bash
# benchmarks/cpu_backends.py as an AVX2-only CPU runs it, on a CPU with more (AVX512, AVX512-BF16, AMX).
# Every machine of this project may be either kind, and the speed issue's bar must hold on both; this
# measures the AVX2 path (auto = float32 torch, so llama.cpp) where no AVX2-only machine is at hand.
# - llama.cpp: a second llama-cpp-python wheel built without AVX512/VNNI/AMX (kept in the cache below and
#   put first on PYTHONPATH, so .venv keeps its native build);
# - torch: its kernels capped at AVX2 (ATen's dispatch, oneDNN and MKL each have a switch);
# - the harness: HARNESS_AUTO_BF16_CPU=0, what `auto` means where bf16 is emulated.
# Same cores, caches and memory as the machine it runs on: an emulation of the instruction set only.
# Arguments go to benchmarks/cpu_backends.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# The same llama-cpp-python release as .venv's (make install pins it), so only the instruction set differs.
VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
DIR=${AVX2_LLAMA:-$HOME/.cache/selfcorrect-harness/llama-avx2-$VERSION}
if [ ! -d "$DIR/llama_cpp" ]; then
  # About 7 minutes on 2 cores, once per machine.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    "$PY" -m pip wheel -q --no-deps --no-cache-dir -w "$DIR.wheel" "llama-cpp-python==$VERSION"
  "$PY" -m pip install -q --no-deps --target "$DIR" "$DIR".wheel/llama_cpp_python-*.whl
fi
export PYTHONPATH="$DIR" ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
export HARNESS_AUTO_BF16_CPU=0
# Show that the emulation took: torch's kernel level and what llama.cpp was built with.
"$PY" -c "
import torch, llama_cpp
print('emulated: torch', torch.backends.cpu.get_cpu_capability(), '| llama.cpp', llama_cpp.__file__)
print('llama.cpp:', llama_cpp.llama_print_system_info().decode())"
exec "$PY" benchmarks/cpu_backends.py "$@"
