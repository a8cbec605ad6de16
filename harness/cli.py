"""The `harness` command line: thin commands that parse, call the core, and print."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from harness.data import DATA_ENV, read_jsonl, resolve_data_dir
from harness.errors import HarnessError
from harness.task import TASKS, get_task

app = typer.Typer(
    help="Train and compare methods that teach a language model to correct its own answer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def user_errors(command: Callable) -> Callable:
    """Turn a HarnessError into one red line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except HarnessError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(code=exc.exit_code) from None

    return wrapper


def progress_bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    )


@app.command("tasks")
@user_errors
def tasks_command() -> None:
    """List the registered tasks with their splits and sizes."""
    root = resolve_data_dir()
    table = Table(title="Tasks")
    for column in ("name", "splits (items)", "description"):
        table.add_column(column)
    for name, cls in TASKS.items():
        splits = ", ".join(f"{split} {size}" for split, size in cls.splits.items())
        table.add_row(name, splits, cls.description)
    console.print(table)
    source = f"local files under {root}" if root else f"the Hugging Face hub ({DATA_ENV} is not set)"
    console.print(f"Data comes from {source}.")


@app.command("grade")
@user_errors
def grade_command(
    input_path: Path = typer.Argument(..., metavar="IN.jsonl", help="Lines with 'answer' (gold) and 'response'."),
    task_name: str = typer.Option(..., "--task", "-t", help="Which grader: gsm8k, math, math500, countdown."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output JSONL [default: IN.graded.jsonl]."),
    workers: int = typer.Option(0, help="Grading processes [default: one per core]."),
) -> None:
    """Grade stored responses: each output line is the input line plus correct, extracted and reason.

    Countdown lines also need 'numbers' and 'target'. The output is written only when every line was
    graded, so a bad input leaves nothing half-written.
    """
    from harness.grading import grade_many
    from harness.store import atomic_write_jsonl

    task = get_task(task_name)
    rows = read_jsonl(input_path, required=("response", *task.grade_fields))
    items = [task.item_from_record(record, f"{input_path}:{lineno}") for lineno, record in rows]
    responses = []
    for lineno, record in rows:
        if not isinstance(record["response"], str):
            raise HarnessError(f"{input_path}:{lineno}: 'response' must be a string")
        responses.append(record["response"])
    out = out or input_path.with_name(input_path.name.removesuffix(".jsonl") + ".graded.jsonl")
    with progress_bar(transient=True) as bar:
        job = bar.add_task("grading", total=len(items), status="")
        grades = grade_many(task, items, responses, workers=workers or None, on_done=lambda k: bar.advance(job, k))
    atomic_write_jsonl(out, ({**record, **grade.to_dict()} for (_, record), grade in zip(rows, grades)))
    n_correct = sum(g.correct for g in grades)
    accuracy = n_correct / len(grades) if grades else 0.0
    console.print(f"graded n={len(grades)}: {n_correct} correct, accuracy {accuracy:.1%} -> {out}")


def main() -> None:
    app()
