from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.registry import Registry
from harness.task import TASKS, get_task


def test_builtin_tasks_arrive_through_entry_points():
    assert {"gsm8k", "math", "math500", "countdown"} <= set(TASKS.names())
    assert get_task("math500").name == "math500"


def test_unknown_name_lists_known_ones():
    with pytest.raises(HarnessError, match=r"unknown task 'gsm9k'; known: ") as raised:
        get_task("gsm9k")
    known = str(raised.value).split("known: ", 1)[1].split(", ")
    assert {"countdown", "gsm8k", "humaneval", "math", "math500", "mbpp"} <= set(known)
    assert known == sorted(known)


def test_decorator_registers_and_conflicts_are_refused():
    registry: Registry[object] = Registry("widget", "harness.no-such-group")

    @registry.register("a")
    class A:
        pass

    assert registry.get("a") is A
    with pytest.raises(HarnessError, match="registered twice"):
        registry.register("a")(type("B", (), {}))


def test_methods_command_lists_kinds_and_default_options():
    from typer.testing import CliRunner

    from harness.cli import app

    out = CliRunner().invoke(app, ["methods"], terminal_width=250).output
    for text in ("base", "prompting", "score", "a2c2stage", "alpha=10.0", "critic_lr=0.0001"):
        assert text in out


def test_unknown_method_option_is_refused():
    from harness.method import get_method

    method = get_method("score", alph=5)
    with pytest.raises(HarnessError, match="unknown score option field"):
        method.objective(method)
