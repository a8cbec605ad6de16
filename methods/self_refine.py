"""`self-refine`: Self-Refine (Madaan et al., 2023), adapted to math. Inference only.

After each attempt the same model writes feedback on it, ending with a verdict line; if the verdict
says the solution is correct the episode stops (its last attempt stands for the remaining turns),
otherwise the model writes a refined solution given its feedback. The feedback text is recorded in
the samples as a step of kind "feedback". A task may word the review and the refine request's answer
format its own way (`Task.review_system`, `review_request`, `answer_format`: code tasks ask for a program).
"""

from __future__ import annotations

import re

from harness.method import Method, Request, register_method
from harness.prompts import ANSWER_FORMAT, SCORE_SYSTEM, answer_format_for

FEEDBACK = (
    "Review the solution below to the problem. Check every step for errors in understanding, setup and "
    "arithmetic, and explain any error you find. Do not write a new solution. End your review with one "
    'line: "Verdict: correct" if the solution and its final answer are right, or "Verdict: incorrect".\n\n'
    "Problem:\n{problem}\n\nSolution:\n{solution}"
)
# The refine request closes with the task's answer format (`answer_format_for`); REFINE is it on math.
REFINE_REQUEST = "Here is feedback on your solution:\n\n{feedback}\n\nUsing this feedback, write an improved solution. "
REFINE = REFINE_REQUEST + ANSWER_FORMAT
_VERDICT = re.compile(r"verdict\s*:\s*\**\s*(correct|incorrect)", re.IGNORECASE)


def says_correct(feedback: str) -> bool:
    verdicts = _VERDICT.findall(feedback)
    return bool(verdicts) and verdicts[-1].lower() == "correct"


@register_method("self-refine")
class SelfRefine(Method):
    paper = "Madaan et al., 2023, Self-Refine: Iterative Refinement with Self-Feedback"
    trains = "nothing"

    def next_request(self, task, item, episode) -> Request | None:
        last = episode.steps[-1]
        if last.kind == "attempt":
            # A task may word the review its own way (code: a program, not a final answer); else the math one.
            prompt = (task.review_request or FEEDBACK).format(problem=item.question, solution=last.text)
            return Request([{"role": "system", "content": self.system_prompt or task.review_system or SCORE_SYSTEM},
                            {"role": "user", "content": prompt}], kind="feedback")
        if says_correct(last.text):
            return None
        attempt = episode.attempts[-1]
        return self.follow_up(attempt, REFINE_REQUEST.format(feedback=last.text) + answer_format_for(task))
