"""Countdown grading: read an arithmetic expression with `ast` (never eval) and check it exactly."""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction

from harness.grading.extract import stated_answer, strip_math_delimiters
from harness.task import Grade

MAX_EXPRESSION_CHARS = 300  # longer "expressions" are not answers; also bounds the parser's work

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_EXPRESSION_RUN = re.compile(r"[\d\s+\-*/×÷().=]+")
_LATEX_SYMBOLS = (
    ("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("÷", "/"), ("−", "-"),
    ("\\left", ""), ("\\right", ""), ("\\{", "("), ("\\}", ")"), ("{", "("), ("}", ")"),
)
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b, ast.Div: None}


def extract_expression(response: str) -> tuple[str | None, str]:
    tags = _ANSWER_TAG.findall(response)
    if tags:
        return tags[-1].strip(), "<answer>"
    stated, source = stated_answer(response)
    if stated is not None:
        return stated, source
    for line in reversed(response.splitlines()):
        runs = [r.strip() for r in _EXPRESSION_RUN.findall(line) if re.search(r"\d\s*[-+*/×÷]\s*[\d(]", r)]
        if runs:
            return max(runs, key=len), "last expression line"
    return None, "no expression"


def normalize(expression: str) -> str:
    expression = strip_math_delimiters(expression)
    for latex, plain in _LATEX_SYMBOLS:
        expression = expression.replace(latex, plain)
    # "(25 - 5) * 5 = 100": only the left side is the answer.
    return expression.split("=")[0].strip()


class _Rejected(Exception):
    pass


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value and the integers used; raises _Rejected for anything but + - * / ( ) and integers."""
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise _Rejected(f"not an arithmetic expression ({type(exc).__name__})") from None
    used: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div):
                if right == 0:
                    raise _Rejected("division by zero")
                return left / right
            return _OPS[type(node.op)](left, right)
        raise _Rejected(f"{type(node).__name__} is not allowed (only integers, + - * / and parentheses)")

    try:
        return walk(tree.body), used
    except RecursionError:
        raise _Rejected("expression nests too deeply") from None


def grade_expression(numbers: list[int], target: int, response: str) -> Grade:
    raw, source = extract_expression(response or "")
    if raw is None:
        return Grade(False, None, "no expression in response")
    expression = normalize(raw)
    if not expression:
        return Grade(False, raw, f"empty expression ({source})")
    if len(expression) > MAX_EXPRESSION_CHARS:
        return Grade(False, expression[:80] + "...", f"expression longer than {MAX_EXPRESSION_CHARS} chars")
    try:
        value, used = evaluate(expression)
    except _Rejected as exc:
        return Grade(False, expression, f"{exc} ({source})")
    if Counter(used) != Counter(numbers):
        return Grade(False, expression, f"uses {sorted(used)}, must use each of {sorted(numbers)} once")
    if value != target:
        return Grade(False, expression, f"value {value} != target {target}")
    return Grade(True, expression, f"equals {target} using each number once ({source})")
