"""GSM8K-style grading: the LAST stated answer, read as one clean number, compared exactly with the gold.

A stated answer is "answer is X" / "Answer: X", "#### X" or \\boxed{X}; the last one in the response's
answer region stands (a model that corrects itself states its final answer last). Without any, the
last number of the region is the answer. Either way the number must be a clean answer:
- a retraction after it ("18? No wait, it is 20") hands the answer to the number after the retraction;
- an alternative ("18 or 19", "18/19", "18-19"), a negation ("not 18"), a power or exponent ("18e5",
  10^{10^{100}}, 9**9**9**9), a factorial, or digits outside ASCII ("１８", "𝟏𝟖", "١٨") make it no answer;
- an arithmetic expression is read whole: "9 * 2 = 18" is 18 (its left side must equal it), "9 * 2"
  is 18, "3/4" is 0.75.
Pure string work plus `arithmetic.evaluate` (an AST walk of + - * / on integers): never eval.
"""

from __future__ import annotations

import re
from fractions import Fraction

from harness.grading.arithmetic import _Rejected, evaluate
from harness.grading.extract import RETRACTION, answer_region
from harness.task import Grade

# A number token: digits of any script (so that non-ASCII ones are seen, then refused), thousands
# groups, decimals. The sign is a minus only where it is not a hyphen between words or numbers.
_NUMBER = re.compile(r"(?:(?<![\w)\].])[-−])?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?<![\w.])[-−]?\.\d+")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{?")
_STATEMENT = re.compile(r"answer\s+is\b[:\s]*|\banswer\s*:\s*|####\s*", re.IGNORECASE)
# Characters that sit inside numbers in model output but carry no value: "$1{,}000", "1,\!000".
_NOISE = re.compile(r"\\\$|\$|\\!|\{,\}|\\,|\\text\s*\{[^}]*\}|\\mathrm\s*\{[^}]*\}|\\(?:left|right)\b")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_BOLD = re.compile(r"(?<![0-9)\s])\*\*|\*\*(?![0-9(\s])|(?<=\s)\*\*(?=\s)|^\*\*|\*\*$")
_CLAUSE_END = re.compile(r"(?<!\d)[.;!](?!\d)|\n|(?<=\d)\.(?:\s|$)")
_NEGATION = re.compile(r"(?:\bnot|n't|\bnever|\bno longer)\s+(?:\w+\s+){0,2}$|\bnot\s*$", re.IGNORECASE)
_ALTERNATIVE = re.compile(
    r"^\s*[?,]?\s*(?:\(?\s*)(?:or|and/or|and|to|-|–|—|~|±|\\pm|\+/-|vs\.?|versus)\s*(?:maybe|perhaps|possibly|even)?"
    r"\s*[$\\]*\s*[-−]?\d",
    re.IGNORECASE,
)
_POWER_AFTER = re.compile(r"^(?:\s*(?:\^|\*\*)|[eE][+-]?\d|\s*!|\s*(?:\\times|×|x|\*|\\cdot)\s*10\s*(?:\^|\*\*))")
_POWER_BEFORE = re.compile(r"(?:\^|\*\*)\s*\{?\s*$|\d[eE][+-]?$")
_OPERATOR_AFTER = re.compile(r"^\s*(?:[-+*/×÷−]|\\times|\\cdot|\\div)\s*[\d(]")
_OPERATOR_BEFORE = re.compile(r"[\d)]\s*(?:[-+*/×÷−]|\\times|\\cdot|\\div)\s*\(?\s*$")
_ALTERNATIVE_BEFORE = re.compile(r"\d[\s$%}]*(?:or|and/or|and|to|vs\.?|versus)\s*(?:maybe|perhaps|possibly|even)?\s*$",
                                 re.IGNORECASE)
_ARITHMETIC = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("÷", "/"), ("−", "-"))


def to_fraction(number: str) -> Fraction | None:
    cleaned = number.replace(",", "").replace("−", "-").strip().rstrip(".")
    if not cleaned.isascii():
        return None
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def _clean(text: str) -> str:
    text = _FRAC.sub(r"\1/\2", text)
    text = _NOISE.sub(lambda m: "," if "," in m.group(0) else "", text)
    return _BOLD.sub("", text)


def _value(expression: str) -> Fraction | None:
    """An integer-arithmetic expression's exact value, or None (anything but + - * / ( ) and integers)."""
    for latex, plain in _ARITHMETIC:
        expression = expression.replace(latex, plain)
    expression = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expression)
    if re.search(r"\d\.\d", expression):  # decimals: scale-free Fraction parsing of each literal
        expression = re.sub(r"\d+\.\d+", lambda m: f"({Fraction(m.group(0)).numerator}/{Fraction(m.group(0)).denominator})",
                            expression)
    try:
        return evaluate(expression.strip())[0]
    except _Rejected:
        return None


def read_number(span: str, context: str = "") -> tuple[Fraction | None, str, str]:
    """(value, the text read, why) of the one clean answer at the start of `span` (a stated answer up to
    the end of the response); `context` is the text just before it, checked for "18 or" and "not"."""
    span = _clean(span)
    end = _CLAUSE_END.search(span)
    clause = span[: end.start()] if end else span
    match = _NUMBER.search(clause)
    if match is None:
        return None, "", "no number in the stated answer"
    before, token, after = _clean(context) + clause[: match.start()], match.group(0), clause[match.end() :]
    retraction = RETRACTION.search(span[match.end() :])
    if retraction:  # "18? No wait, it is 20": the number after the retraction is the answer
        value, text, why = read_number(span[match.end() + retraction.end() :])
        return value, text, f"{token} retracted; {why}" if value is None else f"{token} retracted"
    return _judge(before, token, after)


def _judge(before: str, token: str, after: str) -> tuple[Fraction | None, str, str]:
    if not token.replace("−", "-").isascii():
        return None, token, f"{token!r} is not written in ASCII digits"
    if _NEGATION.search(before):
        return None, token, f"the answer is negated ('{before.strip()[-20:]} {token}')"
    if _POWER_AFTER.match(after) or _POWER_BEFORE.search(before):
        return None, token, f"{token} is part of a power or exponent ('{(token + after)[:30]}')"
    if "=" in after:  # "9 * 2 = 18": the answer is the last side; an arithmetic left side must equal it
        *sides, right = (token + after).split("=")
        last = _NUMBER.search(right)
        if last is None:
            return None, token, "an equation with no number on its right side"
        value, text, why = _judge(right[: last.start()], last.group(0), right[last.end() :])
        if value is None:
            return value, text, why
        for side in sides:
            side_value = _value(side)
            if side_value is not None and side_value != value:
                return None, text, f"its equation is false ({side.strip()} != {text})"
        return value, text, "last side of its equation"
    if _ALTERNATIVE.match(after) or _ALTERNATIVE_BEFORE.search(before):
        return None, token, f"more than one answer ('{(before[-15:] + token + after[:15]).strip()}')"
    if _OPERATOR_AFTER.match(after):  # "9 * 2": an expression, read whole or not at all
        value = _value(token + after)
        if value is None:
            return None, token, f"{(token + after).strip()[:30]!r} is not one number"
        return value, (token + after).strip(), "value of its arithmetic"
    value = to_fraction(token)
    return (value, token, "") if value is not None else (None, token, f"unreadable number {token!r}")


def _statements(region: str) -> list[tuple[int, int, str]]:
    """(position, where its answer starts, label) of every stated answer."""
    found = [(m.start(), m.end(), "'answer is'" if "is" in m.group(0).lower() else "'####'" if "#" in m.group(0)
              else "'Answer:'") for m in _STATEMENT.finditer(region)]
    found += [(m.start(), m.end(), "\\boxed") for m in _BOXED.finditer(region)]
    return sorted(found)


def extract_number(response: str) -> tuple[Fraction | None, str | None, str]:
    """(value, text read, where from and why): the last stated answer's number, else the last number."""
    region = answer_region(response)
    statements = _statements(region)
    if statements:
        start, answer_start, label = statements[-1]
        value, text, why = read_number(region[answer_start:], region[max(0, start - 40) : start])
        return value, text or None, f"{label}{': ' + why if why else ''}"
    cleaned = _clean(region)
    numbers = list(_NUMBER.finditer(cleaned))
    if not numbers:
        return None, None, "no number in response"
    last = numbers[-1]
    before, after = cleaned[: last.start()], cleaned[last.end() :]
    end = _CLAUSE_END.search(cleaned, last.end())  # on the whole text: "87!" ends no clause after its 7
    if RETRACTION.search(after):
        return None, last.group(0), f"last number {last.group(0)} is retracted"
    if _OPERATOR_BEFORE.search(before[-12:]):
        return None, last.group(0), f"last number {last.group(0)} ends an expression, not an answer"
    if before.rstrip().endswith("="):  # "9 * 2 = 18": an arithmetic left side must equal the answer
        left = re.search(r"[\d\s+\-*/×÷().,]*$", before.rstrip()[:-1].replace("\\times", "*").replace("\\cdot", "*"))
        left_value = _value(left.group(0)) if left and re.search(r"\d\s*[-+*/×÷]", left.group(0)) else None
        value = to_fraction(last.group(0))
        if left_value is not None and value is not None and left_value != value:
            return None, last.group(0), f"its equation is false ({left.group(0).strip()} != {last.group(0)})"
    value, text, why = _judge(before[-60:], last.group(0), cleaned[last.end() : end.start()] if end else after)
    return value, text or None, f"last number{': ' + why if why else ''}"


def grade_number(gold: str, response: str) -> Grade:
    gold_value = to_fraction(gold)
    if gold_value is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    value, text, source = extract_number(response or "")
    if value is None:
        return Grade(False, text, source if text else "no number in response")
    extracted = text.replace(",", "") if text else text
    if value == gold_value:
        return Grade(True, extracted, f"equal ({source})")
    return Grade(False, extracted, f"{extracted} != {gold} ({source})")
