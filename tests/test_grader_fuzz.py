"""Seeded fuzz of the MATH and GSM8K graders: no hostile answer is graded correct, every control is.

Hostile answers are made by CLASS (issue 10), not copied from examples: digits mutated, braces moved,
letter case flipped, retractions and alternatives appended, negations, exponent and power tricks,
non-ASCII digits, equations whose numeric left side is false, one box of several, the right answer only
in chat-template debris or in an earlier, retracted attempt. Controls wrap the right answer in the same
ways a model does (boxes, SCoRe statements, Final Answer sentences, debris after the answer, a wrong
first attempt corrected later, equivalent renderings). Graded in-process (a few seconds).
"""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from harness.task import Item, get_task

SEED = 10
PER_KIND = 200  # hostile and control answers per task

DIGITS = {  # digit sets outside ASCII that `\d` or a careless reader would take for 0-9
    "fullwidth": "０１２３４５６７８９",
    "math bold": "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗",
    "arabic-indic": "٠١٢٣٤٥٦٧٨٩",
    "devanagari": "०१२३४५६७८९",
    "superscript": "⁰¹²³⁴⁵⁶⁷⁸⁹",
}
DEBRIS = ["<|im_end|>\n<|im_start|>user\n", "<|endoftext|>", "<|im_start|>user\n", "</s>"]
RETRACTIONS = ["? No wait, it is {}", ". Wait, actually it is {}", ". Hmm, no, {}", ". Sorry, I mean {}", ". Oops: {}"]
ALTERNATIVES = ["{} or {}", "either {} or {}", "{}, or maybe {}", "{} and {}", "{} to {}", "{}-{}", "between {} and {}"]


def unicode_digits(text: str, rng: random.Random) -> str:
    table = rng.choice(list(DIGITS.values()))
    return "".join(table[int(c)] if c.isascii() and c.isdigit() else c for c in text)


def mutate_digit(text: str, rng: random.Random) -> str:
    spots = [i for i, c in enumerate(text) if c.isdigit()]
    i = rng.choice(spots)
    return text[:i] + rng.choice([d for d in "0123456789" if d != text[i]]) + text[i + 1 :]


def other_number(value: int, rng: random.Random) -> int:
    return value + rng.choice([-10, -2, -1, 1, 2, 7, 100])


# ------------------------------------------------------------------------------------------------- GSM8K

BODIES = [
    "She buys {a} packs of {b} and keeps the rest.\n",
    "First we find the total: {a} * {b} = {p}.\n",
    "Let me think step by step. There are {a} boxes with {b} each.\n",
    "",
]


def gsm8k_answer_forms(g: str) -> list[str]:
    return [f"The answer is {g}.", f"#### {g}", f"So the total is $\\boxed{{{g}}}$.",
            f"Final Answer: The final answer is {g}. I hope it is correct.", f"She ends up with {g} dollars.",
            f"The answer is **{g}**.", f"Final Answer: The final answer is ${g}$. I hope it is correct."]


def gsm8k_controls(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    cases = []
    while len(cases) < n:
        gold = rng.choice([rng.randint(2, 99), rng.randint(100, 9999), rng.randint(10000, 2000000)])
        a = rng.choice([d for d in range(2, 13) if gold % d == 0] or [1])
        body = rng.choice(BODIES).format(a=a, b=gold // a, p=gold)
        rendering = rng.choice([str(gold), f"{gold:,}", f"{gold}.00" if gold < 10000 else str(gold)])
        wrong = other_number(gold, rng)
        kind = rng.randrange(6)
        if kind <= 2:
            response = body + rng.choice(gsm8k_answer_forms(rendering))
        elif kind == 3:  # a retraction that lands on the right answer
            response = body + "The answer is " + str(wrong) + rng.choice(RETRACTIONS).format(rendering) + "."
        elif kind == 4:  # debris after the answer
            response = body + rng.choice(gsm8k_answer_forms(rendering)) + rng.choice(DEBRIS) + f"The answer is {wrong}."
        else:  # a true equation ending in the answer
            response = body + f"The answer is {a} * {gold // a} = {rendering}."
        cases.append((str(gold), response, f"control {kind}"))
    return cases


def gsm8k_hostile(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    cases = []
    while len(cases) < n:
        gold = rng.choice([rng.randint(2, 99), rng.randint(100, 9999)])
        g, wrong = str(gold), str(other_number(gold, rng))
        body = rng.choice(BODIES).format(a=2, b=gold, p=2 * gold)
        form = rng.choice(gsm8k_answer_forms("{}"))
        kind = rng.choice(["digits", "alternative", "retraction", "negation", "exponent", "unicode", "equation",
                           "later statement", "debris", "boxes"])
        if kind == "digits":
            stated = mutate_digit(g, rng)
            if int(stated) == gold:
                continue
            response = body + form.format(stated)
        elif kind == "alternative":
            pair = [g, wrong] if rng.random() < 0.5 else [wrong, g]
            response = body + form.format(rng.choice(ALTERNATIVES).format(*pair))
        elif kind == "retraction":
            response = body + "The answer is " + g + rng.choice(RETRACTIONS).format(wrong) + "."
        elif kind == "negation":
            response = body + rng.choice([f"The answer is not {g}.", f"The answer isn't {g}.",
                                          f"The answer is definitely not {g}."])
        elif kind == "exponent":
            k = rng.randint(2, 9)
            response = body + form.format(rng.choice([f"{g}e{k}", f"{g}E{k}", f"{g}^{k}", f"{g}**{k}", f"{g}!",
                                                      f"{g}^{{{g}^{{{k}}}}}", f"{g}**{g}**{k}",
                                                      f"{g} \\times 10^{k}"]))
        elif kind == "unicode":
            response = body + form.format(unicode_digits(g, rng))
            if rng.random() < 0.5:  # the right number in ASCII earlier must not rescue it
                response = f"We get {g} in the first step.\n" + response
        elif kind == "equation":
            a = rng.randint(1, 50)
            response = body + form.format(f"{a} + {gold + rng.choice([1, 2, 5])} = {g}")
        elif kind == "later statement":
            response = body + form.format(g) + "\nLet me redo the last step.\n" + form.format(wrong)
        elif kind == "debris":
            response = body + form.format(wrong) + rng.choice(DEBRIS[:3]) + f"The answer is {g}."
        else:
            response = body + f"So it is $\\boxed{{{g}}}$ or $\\boxed{{{wrong}}}$."
        cases.append((g, response, kind))
    return cases


# ------------------------------------------------------------------------------------------------- MATH

# (gold, renderings a model might write that are equivalent). Golds are reduced, so changing one digit
# can never give an equal value.
MATH_GOLDS = [
    (r"\frac{14}{3}", [r"\frac{14}{3}", r"\dfrac{14}{3}", "14/3"]),
    (r"\frac{11}{2}", [r"\frac{11}{2}", "5.5"]),
    (r"\sqrt{23}", [r"\sqrt{23}"]),
    (r"2\sqrt{5}", [r"2\sqrt{5}", r"\sqrt{20}"]),
    ("2x + 3", ["2x+3", "3 + 2x"]),
    ("x^2 + 7x + 10", ["x^2+7x+10", "(x+2)(x+5)"]),
    ("(1, 2)", ["(1,2)"]),
    ("[2, 5)", ["[2,5)"]),
    (r"3\pi", [r"3\pi", r"3 \pi"]),
    (r"-\frac{2}{3}", [r"-\frac{2}{3}", r"-\dfrac{2}{3}"]),
    (r"28\%", [r"28\%"]),
    ("y = 2x + 3", ["y=2x+3"]),
    ("1, 2", ["1, 2", "2, 1"]),
]


def math_golds(rng: random.Random) -> tuple[str, list[str]]:
    kind = rng.randrange(3)
    if kind == 0:
        return rng.choice(MATH_GOLDS)
    if kind == 1:
        n = str(rng.randint(2, 9999))
        return n, [n]
    value = Fraction(rng.randint(1, 99), rng.randint(2, 30))
    while value.denominator == 1:
        value = Fraction(rng.randint(1, 99), rng.randint(2, 30))
    latex = f"\\frac{{{value.numerator}}}{{{value.denominator}}}"
    return latex, [latex, f"\\dfrac{{{value.numerator}}}{{{value.denominator}}}"]


def math_wrappers(r: str) -> list[str]:
    return [f"Therefore the answer is $\\boxed{{{r}}}$.", f"Final Answer: The final answer is ${r}$. I hope it is correct.",
            f"So we get\n\\[\\boxed{{{r}}}\\]", f"Final Answer: The answer is ${r}$.",
            f"Final Answer: The final answer is $\\boxed{{{r}}}$. I hope it is correct."]


def math_controls(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    cases = []
    while len(cases) < n:
        gold, renderings = math_golds(rng)
        r = rng.choice(renderings)
        kind = rng.randrange(5)
        if gold == "1, 2" and kind != 1:
            response = "The roots are $\\boxed{1}, \\boxed{2}$."
        elif kind <= 1:
            response = "We simplify step by step.\n" + rng.choice(math_wrappers(r))
        elif kind == 2:  # debris after the answer
            response = rng.choice(math_wrappers(r)) + rng.choice(DEBRIS) + "Final Answer: The final answer is $0$."
        elif kind == 3:  # a wrong first attempt, corrected
            response = (f"Final Answer: The final answer is ${mutate_digit(gold, rng) if any(c.isdigit() for c in gold) else 0}$."
                        f" I hope it is correct.\nWait, I made an error in the last step.\n" + rng.choice(math_wrappers(r)))
        else:  # variable = value, or a percent word
            if gold.endswith(r"\%"):
                response = f"The share is {gold[:-2]} percent."
            elif "=" in gold or "," in gold:
                response = rng.choice(math_wrappers(r))
            else:
                response = f"Solving, we find $\\boxed{{k = {r}}}$."
        cases.append((gold, response, f"control {kind}"))
    return cases


def move_brace(latex: str, rng: random.Random) -> str | None:
    """Move one digit across a brace: \\frac{14}{3} -> \\frac{1}{43}, \\sqrt{23} -> \\sqrt{2}3, 10 -> 1{0}."""
    if "{" not in latex:
        return latex[0] + "{" + latex[1:] + "}" if len(latex) > 1 and latex.isdigit() else None
    spots = [i for i, c in enumerate(latex) if c == "}" and i > 1 and latex[i - 1].isdigit() and latex[i - 2].isdigit()]
    if not spots:
        return None
    i = rng.choice(spots)
    return latex[: i - 1] + "}" + ("{" if latex[i + 1 : i + 2] == "{" else "") + latex[i - 1] + latex[i + 2 if latex[i + 1 : i + 2] == "{" else i + 1 :]


def flip_case(latex: str, rng: random.Random) -> str | None:
    plain = latex.replace(r"\frac", "").replace(r"\sqrt", "").replace(r"\pi", "")
    letters = [c for c in plain if c.isalpha()]
    if not letters:
        return None
    letter = rng.choice(letters)
    return re_sub_letter(latex, letter, letter.swapcase())


def re_sub_letter(latex: str, old: str, new: str) -> str:
    import re

    return re.sub(rf"(?<!\\)(?<![A-Za-z]){old}(?![A-Za-z])", new, latex)


def math_hostile(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    cases = []
    while len(cases) < n:
        kind = rng.choice(["digits", "brace", "case", "equation", "one box", "later statement", "debris", "unicode",
                           "percent", "retraction"])
        gold, renderings = math_golds(rng)
        if kind in ("equation", "unicode"):
            gold = str(rng.randint(2, 9999))
        elif kind == "one box":
            gold = "1, 2"
        elif kind == "percent":
            gold = f"{rng.randint(1, 99)}\\%"
        wrap = rng.choice(math_wrappers("@"))
        if kind == "digits" and any(c.isdigit() for c in gold):
            response = wrap.replace("@", mutate_digit(rng.choice(renderings), rng))
        elif kind == "brace" and (moved := move_brace(gold, rng)) is not None and moved != gold:
            response = wrap.replace("@", moved)
        elif kind == "case" and (flipped := flip_case(gold, rng)) is not None:
            response = wrap.replace("@", flipped)
        elif kind == "equation" and gold.isdigit():
            a = rng.randint(1, 40)
            b = int(gold) - a + rng.choice([-3, -1, 1, 2, 9])
            response = wrap.replace("@", rng.choice([f"{a}+{b}={gold}", f"x = {a}+{b} = {gold}", f"{a} + {b} = {gold}"]))
        elif kind == "one box" and gold == "1, 2":
            response = f"The roots are $1$ and $2$, so the answer is $\\boxed{{{rng.choice('12')}}}$."
        elif kind == "later statement" and any(c.isdigit() for c in gold):
            response = (f"Final Answer: The final answer is ${gold}$. I hope it is correct.\nWait, let me recheck.\n"
                        f"Final Answer: The final answer is ${mutate_digit(gold, rng)}$. I hope it is correct.")
        elif kind == "debris" and any(c.isdigit() for c in gold):
            response = (wrap.replace("@", mutate_digit(gold, rng)) + rng.choice(DEBRIS[:3])
                        + f"Final Answer: The final answer is ${gold}$. I hope it is correct.")
        elif kind == "unicode" and gold.isdigit():
            response = wrap.replace("@", unicode_digits(gold, rng))
        elif kind == "retraction" and any(c.isdigit() for c in gold):
            response = wrap.replace("@", rng.choice(renderings)) + rng.choice(RETRACTIONS).format(
                rng.choice(["", f"${mutate_digit(gold, rng)}$", mutate_digit(gold, rng)])) + "."
        elif kind == "percent" and gold.endswith(r"\%"):
            response = f"The share is {int(gold[:-2]) + rng.choice([-1, 1, 10])} {rng.choice(['percent', 'pct', '%'])}."
        else:
            continue
        cases.append((gold, response, kind))
    return cases


# ------------------------------------------------------------------------------------------------- tests

GENERATORS = {"gsm8k": (gsm8k_hostile, gsm8k_controls), "math": (math_hostile, math_controls)}


@pytest.mark.parametrize("task_name", ["gsm8k", "math"])
def test_no_hostile_answer_is_graded_correct_and_every_control_is(task_name):
    hostile_of, controls_of = GENERATORS[task_name]
    rng = random.Random(SEED)
    hostile, controls = hostile_of(rng, PER_KIND), controls_of(rng, PER_KIND)
    task = get_task(task_name)
    passed = [(kind, gold, response) for gold, response, kind in hostile
              if task.grade(Item("fuzz", "", gold), response).correct]
    grades = [(kind, gold, response, task.grade(Item("fuzz", "", gold), response)) for gold, response, kind in controls]
    failed = [(kind, gold, response, grade.reason) for kind, gold, response, grade in grades if not grade.correct]
    assert not passed, f"{len(passed)} of {len(hostile)} hostile answers graded correct: {passed[:5]}"
    assert not failed, f"{len(failed)} of {len(controls)} controls graded incorrect: {failed[:5]}"
    assert len({kind for _, _, kind in hostile}) >= 10  # every class is exercised
