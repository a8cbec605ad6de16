"""MATH grading: math-verify's own extraction and comparison (gold first: order matters), narrowed.

What we add to `verify(parse(gold), parse(response))` (issue 10) only narrows it:
- the text read is the response's last attempt (`answer_region`: chat-template debris and a
  hallucinated next problem cut off);
- where the SCoRe statement "The final answer is X" is present, the LAST one stands and only its X is
  read (math-verify itself would prefer an earlier statement that ends in "I hope it is correct"),
  unless a later attempt answers again after it (a box or a Final Answer line): then that tail is read;
- a retraction after the stated answer (the SCoRe statement or the last box: "No wait", "Actually")
  takes it back: what follows is read instead, and with nothing there the answer is incorrect;
  else, where a looser "Final Answer: ..." line closes the response, math-verify reads from its last
  one; else math-verify reads the whole region (several \\boxed{} together, percent words, "k = 45");
- a verdict math-verify calls equivalent is refused when the stated answer (boxed, or in a Final Answer
  statement) is an equation one of whose purely numeric sides differs from another
  (`\\boxed{2+2=5}` is not 5; `\\boxed{k = 45}` still is 45; an equation in unmarked running text
  is left to math-verify), or when its letters differ from the gold's only by case (`X` is not `x`);
- where math-verify reads nothing equivalent, an exactly equal text (after spacing, `\\text{}` and
  `\\dfrac` are normalized; case and braces kept) still counts: text answers math-verify can't parse.

math-verify bounds its work with SIGALRM, which only exists in a process's main thread; off the main
thread we switch its timer off and rely on the grading pool's hard deadline instead (`pool.py`).
"""

from __future__ import annotations

import logging
import re
import threading

from harness.grading.extract import FINAL_ANSWER_LINE, RETRACTION, answer_region, final_answer_text, last_box_end
from harness.task import Grade

SOFT_TIMEOUT_S = 2  # per math-verify call; integer because signal.alarm takes whole seconds
MAX_ANSWER_CHARS = 1000
MAX_REGION_CHARS = 10000  # math-verify reads at most the region's end, where answers are

logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every timeout it handles

_MATH_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")
_PERCENT_WORD = re.compile(r"\s*(?:\\%|%|percent(?:age)?|pct)\.?$", re.IGNORECASE)
_EQUALS = re.compile(r"(?<![\\<>!])=")  # math-verify's own equation split
_TEXT_MACRO = re.compile(r"\\(?:text|textbf|textit|textnormal|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\ |\s|\$")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_LATER_ANSWER = _STATED = re.compile(r"\\boxed|\\fbox|final answer", re.IGNORECASE)
_OPTION_LETTER = re.compile(r"^\(?[A-Ea-e]\)?$")


def _signal_timeout(seconds: int) -> int | None:
    return seconds if threading.current_thread() is threading.main_thread() else None


def exact_text(latex: str) -> str:
    """The text with spacing, delimiters and text macros normalized; case and braces are kept."""
    text = _TEXT_MACRO.sub(r"\1", latex)
    text = _SPACING.sub("", text).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".")


def _letters(latex: str) -> set[str]:
    text = re.sub(r"\\(?:text|textbf|textit|textnormal|mathrm|mbox|operatorname|begin|end)\s*\{[^{}]*\}", "", latex)
    return set(re.findall(r"[A-Za-z]", _COMMAND.sub("", text)))


def case_mismatch(gold: str, prediction: str) -> bool:
    """True when the answer's letters equal the gold's only up to case (math-verify lowercases symbols)."""
    if _OPTION_LETTER.match(exact_text(gold)):  # a multiple-choice letter: "c" is option (C)
        return False
    ours, theirs = _letters(gold), _letters(prediction)
    return bool(ours) and ours != theirs and {c.lower() for c in ours} == {c.lower() for c in theirs}


def _as_math(statement: str) -> str:
    """What math-verify reads of a Final Answer statement's X: delimited math as written, else `$X$`."""
    if _MATH_DELIMITED.search(statement):
        return statement
    return f"${_PERCENT_WORD.sub(lambda _: chr(92) + '%', statement)}$"


class _Reader:
    """math-verify's parse and verify with our configs and timeout."""

    def __init__(self, timeout: int | None):
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

        self.timeout = timeout
        self._parse, self._verify = parse, verify
        self.configs = [LatexExtractionConfig(), ExprExtractionConfig()]
        self.latex_only = [LatexExtractionConfig()]

    def parse(self, text: str, latex_only: bool = False) -> list:
        return self._parse(text, self.latex_only if latex_only else self.configs, parsing_timeout=self.timeout)

    def gold(self, gold: str) -> list:
        """A gold answer as MATH gives it (bare LaTeX), or with its own delimiters / box / solution text."""
        delimited = bool(_MATH_DELIMITED.search(gold))
        return self.parse(gold if delimited else f"${gold}$") or self.parse(f"${gold}$" if delimited else gold)

    def verify(self, gold: list, prediction: list) -> bool:
        return self._verify(gold, prediction, timeout_seconds=self.timeout)

    def number(self, latex: str):
        """The side's value when it is a plain number or arithmetic of numbers, else None."""
        parsed = self.parse(f"${latex}$", latex_only=True)
        value = parsed[0] if parsed else None
        if getattr(value, "free_symbols", None) == set() and getattr(value, "is_number", False):
            return value
        return None


def false_equation(reader: _Reader, answer: str) -> str | None:
    """"2+2 = 5" when an equation in the answer has two numeric sides that differ, else None."""
    for part in answer.split(" and "):  # math-verify joins several answers with " and "
        pieces = part.split(",") if part.count("=") > 1 and "," in part else [part]
        for piece in pieces:
            sides = _EQUALS.split(piece)
            if len(sides) < 2:
                continue
            numbers = [(side.strip(), value) for side in sides if (value := reader.number(side)) is not None]
            for (side, value), (last_side, last) in zip(numbers, numbers[1:]):
                if not reader.verify([last], [value]):
                    return f"{side} = {last_side}"
    return None


def _stated_end(region: str) -> int | None:
    """Where the last stated answer ends: the last box, or the line of the last "Final Answer"."""
    lines = list(FINAL_ANSWER_LINE.finditer(region))
    line_end = None
    if lines:
        newline = region.find("\n", lines[-1].end())
        line_end = len(region) if newline < 0 else newline
        line_end = region.find(".", lines[-1].end(), line_end) + 1 or line_end  # the sentence, if it ends
    ends = [e for e in (last_box_end(region), line_end) if e is not None]
    return max(ends) if ends else None


def grade_latex(gold: str, response: str, timeout: int = SOFT_TIMEOUT_S) -> Grade:
    reader = _Reader(_signal_timeout(timeout))
    region = answer_region(response or "")[-MAX_REGION_CHARS:]
    statement, end = final_answer_text(region)
    if statement is not None and _LATER_ANSWER.search(region[end:]):
        statement, region = None, region[end:]  # a later attempt answers again (a box, a Final Answer line)
    answer_end = end if statement is not None else _stated_end(region)
    retraction = RETRACTION.search(region, answer_end) if answer_end is not None else None
    if retraction:  # "\\boxed{18}. No wait, it is 20": what follows the retraction is the answer, if anything
        tail = region[retraction.end():]
        prediction = reader.parse(tail)
        if not prediction:
            return Grade(False, statement, "the stated answer is retracted and nothing follows")
        statement, source = None, "after a retraction"
    elif statement is not None:
        if len(statement) > MAX_ANSWER_CHARS:
            return Grade(False, statement[:80] + "...", f"answer longer than {MAX_ANSWER_CHARS} chars")
        source, prediction = "final answer", reader.parse(_as_math(statement))
    else:
        lines = list(FINAL_ANSWER_LINE.finditer(region))
        source, prediction = "Final Answer line", reader.parse(region[lines[-1].start():]) if lines else []
        if not prediction:
            source, prediction = "math-verify extraction", reader.parse(region)
    if not prediction:
        return Grade(False, statement, f"no answer found ({source})")
    stated = source != "math-verify extraction" or bool(_STATED.search(region))  # boxed or Final Answer
    extracted = prediction[-1] if isinstance(prediction[-1], str) else str(prediction[0])
    parsed_gold = reader.gold(gold)
    # math-verify's extracted text read again on its own: in context its value can come out wrong
    # ("$\\boxed{50\\%}$" after "100\\%" reads as 100); the text is still the answer it chose.
    if parsed_gold and (reader.verify(parsed_gold, prediction)
                        or reader.verify(parsed_gold, reader.parse(f"${extracted}$"))):
        if "=" not in gold and stated and (equation := false_equation(reader, extracted)):
            return Grade(False, extracted, f"the answer's equation {equation} is false ({source})")
        if case_mismatch(gold, extracted):
            return Grade(False, extracted, f"differs from {gold} in letter case ({source})")
        return Grade(True, extracted, f"equivalent ({source})")
    candidate = statement if statement is not None and not _MATH_DELIMITED.search(statement) else extracted
    if exact_text(candidate) and exact_text(candidate) == exact_text(gold):
        return Grade(True, extracted, f"same text ({source})")
    if not parsed_gold:
        return Grade(False, extracted, f"gold {gold!r} could not be parsed")
    return Grade(False, extracted, f"not equivalent to {gold} ({source})")
