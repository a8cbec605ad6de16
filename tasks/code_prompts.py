"""Prompt texts shared by the code tasks (`humaneval`, `mbpp`).

SCoRe (Kumar et al., 2024) describes its code set-up (trained on MBPP with MBPP's 3-shot prompt for
first attempts, evaluated zero-shot on HumanEval). The MATH texts in harness/prompts.py are SCoRe's
(Appendix C); the text of its code self-correction instruction (MBPP/HumanEval) was not available to us
to check, so nothing here is quoted from SCoRe: `CODE_SYSTEM`, `HUMANEVAL_USER` and the code wording of
the methods' requests are ours. `CODE_CORRECTION` is adapted from SCoRe's MATH
correction instruction: its first two sentences with "solution above" made "code above", then
`CODE_ANSWER_FORMAT` where the MATH one has its "Final Answer" sentence. The MBPP few-shot turns use
Austin et al. (2021)'s prompt wording ("You are an expert Python programmer, and here is your task:
...") with task_ids 2, 3, 4.

Besides the correction instruction, a code task words the other methods' requests (`harness.task.Task`):
`CODE_ANSWER_FORMAT` closes Self-Refine's refine request and RRR's retry request, `CODE_REVIEW_SYSTEM` and
`CODE_REVIEW` are Self-Refine's feedback request, `CODE_REFLECT` is RRR's reflection request. Each follows
its method's MATH text (methods/self_refine.py, methods/rrr.py) with the math words (final answer,
arithmetic) replaced by code ones.
"""

from __future__ import annotations

CODE_SYSTEM = (
    "You are an expert Python programmer. When you respond, respond only with the complete Python program "
    "in one ```python code block."
)

HUMANEVAL_USER = "Complete the following Python function:\n```python\n{prompt}```"

# What every request for a new program ends with: the code counterpart of SCoRe's "Final Answer" sentence.
CODE_ANSWER_FORMAT = "Only output the final correct Python program, in one ```python code block!"

# Adapted from SCoRe's MATH correction instruction (not SCoRe's code text, which we could not check); see above.
CODE_CORRECTION = (
    "There might be an error in the code above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. " + CODE_ANSWER_FORMAT
)

# Self-Refine's feedback request on code (ours, after methods/self_refine.py's FEEDBACK): same verdict line.
CODE_REVIEW_SYSTEM = "You are an expert Python programmer."
CODE_REVIEW = (
    "Review the program below, written to solve the problem. Check it for errors in understanding the "
    "problem, in its logic and in edge cases, and explain any error you find. Do not write a new program. "
    'End your review with one line: "Verdict: correct" if the program is right, or "Verdict: incorrect".\n\n'
    "Problem:\n{problem}\n\nSolution:\n{solution}"
)

# RRR's reflection request on code (ours, after methods/rrr.py's REFLECT).
CODE_REFLECT = (
    "Your program above may be wrong. Reflect on it: point out what went wrong (a misunderstanding of the "
    "problem, a logic error or a missed edge case) and how to avoid it. Do not write a new program yet."
)

MBPP_TASK = "You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n{tests}"

MBPP_FEWSHOT_IDS = (2, 3, 4)


def fenced(code: str) -> str:
    return f"```python\n{code.strip()}\n```"
