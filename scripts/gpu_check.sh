#!/usr/bin/env bash
# The GPU check in one command (issue 25): `make gpu-check`, or `scripts/gpu_check.sh` on a GPU machine.
# Needs only what such a machine has without a network: PyTorch, transformers, peft, accelerate, pytest.
# The project itself goes in with `pip install --no-deps` (its plugins register through entry points).
# Pure-Python packages the machine lacks (math-verify for the grading worker, ...) travel as wheels in
# .whl/ (`scripts/gpu_wheels.sh` fetches them on a machine with a network) and install to a scratch dir.
# Writes results/gpu-check/summary.json (or $GPU_CHECK_OUT); exit code: pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  site=${TMPDIR:-/tmp}/harness-gpu-site
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# (asked from / so that an egg-info left in this folder does not count as an install)
if ! (cd / && "$PYTHON" -c "import harness.cli" 2>/dev/null); then
  "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e .
fi
export HARNESS_AUTO_BF16_CPU=0 PYTHONUNBUFFERED=1
exec "$PYTHON" scripts/gpu_check.py --out "${GPU_CHECK_OUT:-results/gpu-check/summary.json}" "$@"
