"""Finding the final answer inside a model's free text. Pure string work: no parsing, no eval."""

from __future__ import annotations

import re

# SCoRe's answer format: "Final Answer: The final answer is X. I hope it is correct."
_FINAL_ANSWER = re.compile(
    r"final answer is[: \t]*([^\s:].*?)\s*(?:\.\s*)?(?:I hope it is correct|$)", re.IGNORECASE | re.MULTILINE
)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")


def final_answer_statement(text: str) -> str | None:
    """X from the last "The final answer is X. I hope it is correct." (dollars and \\boxed unwrapped)."""
    matches = list(_FINAL_ANSWER.finditer(text))
    if not matches:
        return None
    answer = matches[-1].group(1).strip()
    boxed = last_boxed(answer)
    if boxed is not None:
        answer = boxed
    answer = strip_math_delimiters(answer)
    return answer or None


def stated_answer(text: str) -> tuple[str | None, str]:
    """(answer, where from): the Final Answer statement, else the last \\boxed{}; (None, "none") if neither."""
    statement = final_answer_statement(text)
    if statement is not None:
        return statement, "final answer"
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "\\boxed"
    return None, "none"


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (nested braces balanced), or of `\\boxed 5`; None if absent."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        content = _braced_or_token(text, start)
        if content is not None:
            return content.strip()
    return None


def _braced_or_token(text: str, start: int) -> str | None:
    if start >= len(text):
        return None
    if text[start] != "{":
        token = re.match(r"[^\s$]+", text[start:])
        return token.group(0) if token else None
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "\\":
            continue
        if ch == "{" and text[i - 1] != "\\":
            depth += 1
        elif ch == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None  # unbalanced: the box never closes


def strip_math_delimiters(text: str) -> str:
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            text = text[len(left) : len(text) - len(right)].strip()
    return text.strip().rstrip(".").strip()
