"""The self-correction harness: one rollout, one grader and one budget for self-correction methods."""

__version__ = "0.1.0"
