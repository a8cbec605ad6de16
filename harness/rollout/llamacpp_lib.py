"""Loading llama-cpp-python: whether it is installed, the one-line error when it is not, and the module
itself with llama.cpp's logging cut to errors. The only place that imports `llama_cpp` (the llama.cpp
backend, harness/rollout/llamacpp_generator.py, gets it from here when a generator is built)."""

from __future__ import annotations

import ctypes
import os

from harness.errors import HarnessError

INSTALL_HINT = "pip install 'selfcorrect-harness[llamacpp]'"


def llamacpp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def require_llamacpp() -> None:
    if not llamacpp_installed():
        raise HarnessError(f"--backend llamacpp needs llama-cpp-python: {INSTALL_HINT}")


GGML_LOG_ERROR, GGML_LOG_CONT = 4, 5  # ggml's log levels (NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5)
_log_state = {"callback": None, "printing": False}


def load_llamacpp():
    """The llama_cpp module (one line naming the extra when it is missing)."""
    require_llamacpp()
    import llama_cpp

    if _log_state["callback"] is None:  # llama.cpp logs every load, context and adapter to stderr: errors only
        _log_state["callback"] = _errors_only(llama_cpp)
        llama_cpp.llama_log_set(_log_state["callback"], ctypes.c_void_p(0))
    return llama_cpp


def _errors_only(llama_cpp):
    """A log callback printing llama.cpp's errors (and their continuation lines) only. llama-cpp-python's
    own maps ggml's levels by an older numbering and prints every warning (one line per tensor an
    adapter cannot repack, for example)."""
    import sys

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data) -> None:
        if level != GGML_LOG_CONT:
            _log_state["printing"] = level == GGML_LOG_ERROR
        if _log_state["printing"]:
            print(text.decode("utf-8", errors="replace"), end="", flush=True, file=sys.stderr)

    return callback


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def model_params(ll):
    """llama.cpp's default model parameters, with weight repacking off where it crashes (below): what
    every llama.cpp model this project loads (the backend, the tests, the benchmarks) is loaded with."""
    params = ll.llama_model_default_params()
    params.use_extra_bufts = weight_repacking_safe()
    return params


def weight_repacking_safe() -> bool:
    """Whether llama.cpp may repack weights into its extra CPU buffer types. On CPUs with AMX-INT8 the
    repack goes to ggml's AMX buffer, and the first decode then segfaults in ggml_backend_amx_mul_mat
    (seen here: Intel Xeon with amx_int8, llama-cpp-python 0.3.36, the embedded Q5_0/Q8_0 GGUF, with
    the kernel granting AMX; upstream ggml-org/llama.cpp#20824, closed unfixed). Off there: the plain
    AVX512 kernels run instead."""
    from harness.models import cpu_flags

    return "amx_int8" not in cpu_flags()

