"""Graders: answer extraction and checks per answer kind, plus a time-bounded multi-core pool."""

from harness.grading.arithmetic import grade_expression
from harness.grading.extract import final_answer_statement, last_boxed
from harness.grading.latex import grade_latex
from harness.grading.numeric import grade_number
from harness.grading.pool import GradingPool, grade_many

__all__ = [
    "GradingPool",
    "final_answer_statement",
    "grade_expression",
    "grade_latex",
    "grade_many",
    "grade_number",
    "last_boxed",
]
