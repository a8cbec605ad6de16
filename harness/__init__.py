"""The self-correction harness: one rollout, one grader and one budget for self-correction methods."""

__version__ = "0.1.0"

# `--model selfcorrect` in lm-eval: registered lazily, when lm-eval's model registry loads (no lm-eval import here).
from harness.lmeval import install_hook as _install_lmeval_hook

_install_lmeval_hook()
