"""MATH grading: extract the final answer, then compare with math-verify (gold first: order matters).

math-verify bounds its work with SIGALRM, which only exists in a process's main thread; off the main
thread we switch its timer off and rely on the grading pool's hard deadline instead (`pool.py`).
"""

from __future__ import annotations

import logging
import re
import threading

from harness.grading.extract import stated_answer
from harness.task import Grade

SOFT_TIMEOUT_S = 2  # per math-verify call; integer because signal.alarm takes whole seconds
MAX_ANSWER_CHARS = 1000
FALLBACK_TAIL_CHARS = 2000  # the fallback extractor reads only the end, where answers are

logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every timeout it handles

# Delimited math segments: $$..$$, $..$, \[..\], \(..\) (no nesting across delimiters).
_MATH_SEGMENT = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\[(.+?)\\\]|\\\((.+?)\\\)", re.DOTALL)
_TEXT_NOISE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\ |\s|\$|\\text|\\mathrm|\\textbf|[{}]")


def _signal_timeout(seconds: int) -> int | None:
    return seconds if threading.current_thread() is threading.main_thread() else None


def _same_text(gold: str, prediction: str) -> bool:
    """Literal agreement after dropping spacing/markup: catches text answers math-verify can't read."""
    a = _TEXT_NOISE.sub("", gold).replace("\\dfrac", "\\frac").lower().rstrip(".")
    b = _TEXT_NOISE.sub("", prediction).replace("\\dfrac", "\\frac").lower().rstrip(".")
    return bool(a) and a == b


def grade_latex(gold: str, response: str, timeout: int = SOFT_TIMEOUT_S) -> Grade:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    mv_timeout = _signal_timeout(timeout)
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    response = response or ""
    extracted, source = stated_answer(response)
    if extracted is None:
        # The last delimited math segment, read by math-verify; with none, math-verify's own extraction
        # over the tail of the text. (On the whole text it would merge "$3n = 33$ and $n = 11$" into a set.)
        tail = response[-FALLBACK_TAIL_CHARS:]
        segments = [next(g for g in m.groups() if g is not None) for m in _MATH_SEGMENT.finditer(tail)]
        target = f"${segments[-1]}$" if segments else tail
        parsed_prediction = parse(target, configs, parsing_timeout=mv_timeout)
        if not parsed_prediction:
            return Grade(False, None, "no answer found")
        extracted, source = str(parsed_prediction[-1]), "math-verify extraction"
    else:
        if len(extracted) > MAX_ANSWER_CHARS:
            return Grade(False, extracted[:80] + "...", f"answer longer than {MAX_ANSWER_CHARS} chars")
        if _same_text(gold, extracted):
            return Grade(True, extracted, f"same text ({source})")
        parsed_prediction = parse(f"${extracted}$", configs, parsing_timeout=mv_timeout)
    parsed_gold = parse(f"${gold}$", configs, parsing_timeout=mv_timeout)
    if not parsed_gold:
        return Grade(False, extracted, f"gold {gold!r} could not be parsed")
    if not parsed_prediction:
        return Grade(False, extracted, f"could not parse the answer ({source})")
    if verify(parsed_gold, parsed_prediction, timeout_seconds=mv_timeout):
        return Grade(True, extracted, f"equivalent ({source})")
    return Grade(False, extracted, f"not equivalent to {gold} ({source})")
