"""The countdown generator: seeded, in range, and every puzzle solvable by its stored solution."""

from __future__ import annotations

from harness.task import get_task


def test_every_test_puzzle_is_reachable_and_in_range():
    task = get_task("countdown")
    items = task.load("test")
    assert len(items) == 1000
    for item in items:
        numbers, target = item.meta["numbers"], item.meta["target"]
        assert len(numbers) in (3, 4) and all(1 <= n <= 100 for n in numbers)
        assert 1 <= target <= 1000
        grade = task.grade(item, f"<answer>{item.answer}</answer>")
        assert grade.correct, (item, grade)
    assert {len(i.meta["numbers"]) for i in items} == {3, 4}


def test_generation_is_deterministic_and_seeded():
    a, b = get_task("countdown").load("test")[:20], get_task("countdown").load("test")[:20]
    assert a == b
    other_seed = type(get_task("countdown"))(seed=1).load("test")[:20]
    assert [i.meta for i in other_seed] != [i.meta for i in a]
    train = get_task("countdown").load("train")[:20]
    assert [i.meta for i in train] != [i.meta for i in a]
