"""Default prompt texts. SCoRe's (Kumar et al., 2024, Appendix C) unless said otherwise."""

from __future__ import annotations

from harness.task import Message

SCORE_SYSTEM = (
    "You are a math expert. When you respond, respond only with the Solution of the final Problem, "
    "thinking step by step. At the end of the Solution, when you give your final answer, write it in "
    'the form "Final Answer: The final answer is $answer$. I hope it is correct."'
)

# The closing sentence of SCoRe's correction instruction: the answer format every rewrite is asked for.
ANSWER_FORMAT = (
    "Only output the final solution! At the end of the Solution, when you give your final answer, write it "
    'in the form "Final Answer: The final answer is $answer$. I hope it is correct."'
)

SCORE_CORRECTION = (
    "There might be an error in the solution above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. " + ANSWER_FORMAT
)


def answer_format_for(task) -> str:
    """The closing sentence of a request for a new solution on `task`: the task's own `answer_format`
    (code tasks ask for the program), else SCoRe's ANSWER_FORMAT."""
    return getattr(task, "answer_format", None) or ANSWER_FORMAT


def problem_chat(problem: str, system: str = SCORE_SYSTEM) -> list[Message]:
    return [{"role": "system", "content": system}, {"role": "user", "content": f"Problem:\n{problem}"}]
