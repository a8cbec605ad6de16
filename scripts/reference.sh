#!/usr/bin/env bash
# The committed reference comparison (results/reference/), regenerated with one command:
#   scripts/reference.sh            (resumable: a rerun generates only what is not stored yet)
# 1. GSM8K: `base` and `self-refine`, the embedded model, the first 200 test problems, 2 attempts, greedy.
# 2. MATH500: `base` with 4 attempts on the first 100 problems (accuracy by attempt), greedy.
# Every evaluation is a resumable run under results/reference/runs/; the comparison folders under
# results/reference/compare/ hold the tables, plots and compare.json (`harness report DIR` rebuilds them).
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS=${HARNESS:-.venv/bin/harness}
export HARNESS_DATA_DIR=${HARNESS_DATA_DIR:-$(cd .. && pwd)/shared/data}
out=results/reference
time "$HARNESS" compare --task gsm8k --model embedded --methods base,self-refine --limit 200 --turns 2 \
  --results-dir "$out" --out "$out/compare/gsm8k-200"
time "$HARNESS" compare --task math500 --model embedded --methods base --limit 100 --turns 4 \
  --results-dir "$out" --out "$out/compare/math500-100-t4"
