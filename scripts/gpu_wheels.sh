#!/usr/bin/env bash
# Fetch, on a machine with a network, the wheels scripts/gpu_check.sh installs on a GPU machine without
# one: the pure-Python packages the grading worker needs that a PyTorch image usually lacks. They go to
# .whl/ (carry that folder along; ~1 MiB). Versions: those this project's environment resolves to.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d .whl \
  math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.11.0
ls -l .whl
