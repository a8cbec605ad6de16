"""Code answers: pull the program out of a response and grade it by running its tests in the sandbox."""

from __future__ import annotations

import re

from harness.grading.sandbox import SandboxLimits, run_tests
from harness.task import Grade

# An opening fence with an optional language tag; the block runs to the next fence or, for a response
# cut off by the token limit, to the end.
_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.MULTILINE | re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", "py3"}
_IMPORT = re.compile(r"^(?:import|from)\s+\S", re.MULTILINE)


def fenced_blocks(response: str) -> list[tuple[str, str]]:
    """(language tag, body) of every fenced block, in order."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(response)]


def extract_program(response: str, prompt_code: str = "", entry_point: str | None = None) -> str:
    """The program a response stands for.

    The last ```python block (else the last untagged block); without one, the response continues
    `prompt_code` (HumanEval's completion format). A block that does not define `entry_point` is a
    body continuing the prompt too. A block that defines it gets the prompt's import lines in front,
    since chat models often drop `from typing import List`.
    """
    blocks = fenced_blocks(response)
    tagged = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    untagged = [body for tag, body in blocks if not tag]
    block = tagged[-1] if tagged else untagged[-1] if untagged else None
    if block is None:
        return prompt_code + response
    if entry_point is not None and not re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", block,
                                                 re.MULTILINE):
        return prompt_code + block
    imports = "".join(line + "\n" for line in prompt_code.splitlines() if _IMPORT.match(line))
    return imports + block


def grade_program(program: str, tests: list[str], setup: str = "", limits: SandboxLimits = SandboxLimits()) -> Grade:
    """Correct when the program and every test statement run to their end in the sandbox."""
    result = run_tests(program, tests, setup=setup, limits=limits)
    return Grade(correct=result.passed, extracted=program, reason=result.reason)
