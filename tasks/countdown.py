"""Countdown (the equation task of Reflect-Retry-Reward, Bensal et al., 2025), generated from a seed.

Each puzzle: 3 or 4 numbers in 1..100 and a target reached by combining all of them with + - * /;
the answer is an expression that uses every number exactly once. Generation builds a random
expression over the numbers first, so every target is reachable by construction.
"""

from __future__ import annotations

import random

from harness.errors import HarnessError
from harness.grading import grade_expression
from harness.sampling import rng_for
from harness.task import Grade, Item, Message, Task, register_task

SYSTEM = (
    "You are a helpful assistant that solves arithmetic puzzles. Think step by step, then give the final "
    "equation in <answer></answer> tags, for example <answer>(1 + 2) / 3</answer>."
)
SPLIT_SIZES = {"train": 10000, "test": 1000}
MAX_TARGET = 1000


def make_puzzle(rng: random.Random) -> tuple[list[int], int, str]:
    """(numbers, target, one solution): exact integer arithmetic at every step, target in 1..1000."""
    while True:
        numbers = [rng.randint(1, 100) for _ in range(rng.choice((3, 4)))]
        pool = [(n, str(n)) for n in numbers]
        rng.shuffle(pool)
        while len(pool) > 1:
            (a, ea), (b, eb) = pool.pop(), pool.pop()
            if a < b:
                (a, ea), (b, eb) = (b, eb), (a, ea)
            choices = ["+", "-", "*"] + (["/"] if b and a % b == 0 else [])
            op = rng.choice(choices)
            value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]
            pool.append((value, f"({ea} {op} {eb})"))
        target, expression = pool[0]
        if 1 <= target <= MAX_TARGET:
            return numbers, target, expression[1:-1]


@register_task("countdown")
class Countdown(Task):
    description = "Reach a target with + - * / using each of 3-4 numbers once; generated from a seed."
    splits = SPLIT_SIZES
    grade_fields = ("answer", "numbers", "target")

    def __init__(self, seed: int = 0):
        self.seed = seed

    def load(self, split: str, data_dir: str | None = None) -> list[Item]:
        self.check_split(split)
        items = []
        for i in range(SPLIT_SIZES[split]):
            # A string seed is hashed with sha512 by `random`: stable across runs and platforms.
            numbers, target, solution = make_puzzle(rng_for("countdown", self.seed, split, i))
            question = f"Using the numbers {numbers}, create an equation that equals {target}."
            items.append(Item(f"countdown/{split}/{i}", question, solution, {"numbers": numbers, "target": target}))
        return items

    def prompt(self, item: Item) -> list[Message]:
        rules = "You can use + - * / and parentheses, and each number must be used exactly once."
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{item.question} {rules}"}]

    def grade(self, item: Item, response: str) -> Grade:
        return grade_expression(item.meta["numbers"], item.meta["target"], response)

    def item_from_record(self, record: dict, where: str) -> Item:
        item = super().item_from_record(record, where)
        numbers, target = record["numbers"], record["target"]
        if not (isinstance(numbers, list) and numbers and all(type(n) is int for n in numbers)):
            raise HarnessError(f"{where}: 'numbers' must be a non-empty list of integers")
        if type(target) is not int:
            raise HarnessError(f"{where}: 'target' must be an integer")
        item.meta = {"numbers": numbers, "target": target}
        return item
