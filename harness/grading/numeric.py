"""GSM8K-style grading: find one number in the response and compare it exactly with the gold."""

from __future__ import annotations

import re
from fractions import Fraction

from harness.grading.extract import final_answer_statement, last_boxed
from harness.task import Grade

# A number: optional sign (not a hyphen between two words/digits), thousands groups or plain digits,
# optional decimals.
_NUMBER = re.compile(r"(?:(?<![\w)\].])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])|(?<![\w.])-?\.\d+")
_ANSWER_IS = re.compile(r"answer is\b[:\s]*(.*)$", re.IGNORECASE | re.MULTILINE)
_HASHES = re.compile(r"####\s*(.*)$", re.MULTILINE)
# Characters that sit inside numbers in model output but carry no value: "$1{,}000", "1,\!000".
_NOISE = re.compile(r"\\\$|\$|\\!|\{,\}|\\,|\\text\{[^}]*\}")


def first_number(span: str) -> str | None:
    match = _NUMBER.search(_NOISE.sub(lambda m: "," if "," in m.group(0) else "", span))
    return match.group(0) if match else None


def last_number(text: str) -> str | None:
    matches = _NUMBER.findall(_NOISE.sub(lambda m: "," if "," in m.group(0) else "", text))
    return matches[-1] if matches else None


def to_fraction(number: str) -> Fraction | None:
    cleaned = number.replace(",", "").strip().rstrip(".")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def extract_number(response: str) -> tuple[str | None, str]:
    """(number, where it came from), trying the explicit answer patterns before the last number."""
    for label, spans in (
        ("'answer is'", [m.group(1) for m in _ANSWER_IS.finditer(response)]),
        ("'####'", [m.group(1) for m in _HASHES.finditer(response)]),
        ("\\boxed", [b] if (b := last_boxed(response)) is not None else []),
        ("final answer", [f] if (f := final_answer_statement(response)) is not None else []),
    ):
        for span in reversed(spans):
            number = first_number(span)
            if number is not None:
                return number, label
    number = last_number(response)
    return number, "last number"


def grade_number(gold: str, response: str) -> Grade:
    gold_value = to_fraction(gold)
    if gold_value is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    number, source = extract_number(response or "")
    if number is None:
        return Grade(False, None, "no number in response")
    value = to_fraction(number)
    if value is None:
        return Grade(False, number, f"unreadable number from {source}")
    extracted = number.replace(",", "")
    if value == gold_value:
        return Grade(True, extracted, f"equal ({source})")
    return Grade(False, extracted, f"{extracted} != {gold} ({source})")
