"""Prompt texts shared by the code tasks (`humaneval`, `mbpp`).

SCoRe (Kumar et al., 2024) describes its code set-up (trained on MBPP with MBPP's 3-shot prompt for
first attempts, evaluated zero-shot on HumanEval) but the text of its code prompts was not available
to us: `CODE_SYSTEM`, `HUMANEVAL_USER` and `CODE_CORRECTION` are ours, the last written after
SCoRe's MATH correction instruction. The MBPP few-shot turns use Austin et al. (2021)'s prompt
wording ("You are an expert Python programmer, and here is your task: ...") with task_ids 2, 3, 4.
"""

from __future__ import annotations

CODE_SYSTEM = (
    "You are an expert Python programmer. When you respond, respond only with the complete Python program "
    "in one ```python code block."
)

HUMANEVAL_USER = "Complete the following Python function:\n```python\n{prompt}```"

CODE_CORRECTION = (
    "There might be an error in the code above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. Only output the final correct Python "
    "program, in one ```python code block!"
)

MBPP_TASK = "You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n{tests}"

MBPP_FEWSHOT_IDS = (2, 3, 4)


def fenced(code: str) -> str:
    return f"```python\n{code.strip()}\n```"
