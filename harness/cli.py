"""The `harness` command line: thin commands that parse, call the core, and print."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.24 carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from harness.data import DATA_ENV, read_jsonl, resolve_data_dir
from harness.errors import HarnessError, Interrupted
from harness.evaluate import RolloutSettings
from harness.sampling import SAMPLING_FIELDS, Sampling
from harness.settings import RunSettings
from harness.task import TASKS, get_task

class OneLineUsageErrors(TyperGroup):
    """Click's own errors (a bad option value, an unknown option) as one line on stderr, exit 2, like
    every other error of the harness, instead of a usage block and a boxed message."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click_errors.NoArgsIsHelpError as exc:
            exc.show()  # `harness` alone: the help
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            hint = f" (see {exc.ctx.command_path} --help)" if getattr(exc, "ctx", None) is not None else ""
            err_console.print(f"[bold red]error:[/] {escape(' '.join(exc.format_message().split()))}{escape(hint)}",
                              highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            err_console.print("[bold red]stopped:[/] interrupted", highlight=False)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    help="Train and compare methods that teach a language model to correct its own answer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineUsageErrors,
)
# Tables are wide (value + interval per column): off a terminal, print them at 120 columns, not 80.
console = Console() if Console().is_terminal else Console(width=120)
err_console = Console(stderr=True)


def user_errors(command: Callable) -> Callable:
    """Turn a HarnessError into one red line on stderr and exit code 2 (no traceback); so are an OS
    error on a file (disk full, no permission) and Ctrl-C."""

    def say(label: str, message: str) -> None:
        # The message is text: "[embedded]" in an install hint must not be read as rich markup.
        text = " ".join(message.split())  # one line, whatever the message holds
        err_console.print(f"[bold red]{label}:[/] {escape(text)}", highlight=False, markup=True, soft_wrap=True)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Interrupted as exc:
            say("stopped", str(exc))
            raise typer.Exit(code=exc.exit_code) from None
        except HarnessError as exc:
            say("error", str(exc))
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            say("stopped", "interrupted; what was stored is kept, and rerunning the command continues from there")
            raise typer.Exit(code=130) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            say("error", f"{where}{exc.strerror or exc}")
            raise typer.Exit(code=2) from None

    return wrapper


class _Bar(Progress):
    """A progress bar that vanishes when its block fails, so an error stays one line on stderr."""

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        if exc_type is None:
            return super().__exit__(exc_type, exc_value, traceback)
        self.live.transient = True  # erase it (on a terminal) or never print it (elsewhere)
        self.live.stop()  # not Progress.stop(), which ends with an empty line off a terminal


def progress_bar(transient: bool = False) -> Progress:
    return _Bar(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    )


def eval_progress(bar: Progress, description: str) -> Callable[..., None]:
    """A task on `bar` for one evaluation; returns evaluate()'s progress callback (tok/s, running Acc)."""
    job = bar.add_task(description, total=None, status="loading")
    started = time.perf_counter()

    def show(done: int, total: int, tokens: int, episodes: list) -> None:
        accs = [sum(e.correct[k] for e in episodes) / len(episodes) for k in range(2)] if episodes else [0, 0]
        rate = tokens / max(time.perf_counter() - started, 1e-9)
        bar.update(job, completed=done, total=total,
                   status=f"{rate:5.1f} tok/s  Acc@t1 {accs[0]:.1%}  Acc@t2 {accs[1]:.1%}")

    return show


def options_from(*classes: type, into: str, unset: bool = False) -> Callable[[Callable], Callable]:
    """One command-line option per field that declares a `help`, in the dataclasses `classes` and the
    dataclasses nested in them (Sampling in RolloutSettings): its default, type and help text come from
    the field, so a setting is declared once. The options stand where the command's parameter `into`
    stands, and the command gets them as `into`, a dict by field name. unset=True: every option defaults
    to None ("not given"), for a command whose settings also come from presets and files."""
    import dataclasses
    import inspect
    import typing

    def settings(cls: type) -> list[tuple[dataclasses.Field, object]]:  # a nested dataclass's, in its place
        hints = typing.get_type_hints(cls)
        return [found for f in dataclasses.fields(cls)
                for found in (settings(hints[f.name]) if dataclasses.is_dataclass(hints[f.name])
                              else [(f, hints[f.name])] if f.metadata.get("help") else [])]

    found = [setting for cls in classes for setting in settings(cls)]

    def option(f: dataclasses.Field, hint: object) -> inspect.Parameter:
        default = None if unset else f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = next(a for a in typing.get_args(hint) if a is not type(None)) if typing.get_args(hint) else hint
        flags = f.metadata.get("flags") or ()
        return inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                 default=typer.Option(default, *flags, help=f.metadata["help"],
                                                      envvar=f.metadata.get("envvar")),
                                 annotation=Optional[kind] if unset or default is None else kind)

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            params += [option(f, hint) for f, hint in found] if param.name == into else [param]

        @functools.wraps(command)
        def wrapper(**kwargs):
            given = {f.name: kwargs.pop(f.name) for f, _ in found}
            return command(**kwargs, **{into: given})

        wrapper.__signature__ = signature.replace(parameters=params)
        return wrapper

    return decorate


def rollout_settings(options: dict) -> dict:
    """RolloutSettings keyword arguments from the options `options_from` made (eval and compare)."""
    sampling = Sampling(**{k: options.pop(k) for k in SAMPLING_FIELDS})
    return {**options, "sampling": sampling}


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
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output JSONL (default: IN.graded.jsonl)."),
    workers: int = typer.Option(0, help="Grading processes (default: one per core)."),
) -> None:
    """Grade stored responses: each output line is the input line plus correct, extracted and reason.

    Countdown lines also need 'numbers' and 'target'. The output is written only when every line was
    graded, so a bad input leaves nothing half-written.
    """
    from harness.grading import grade_many
    from harness.store import atomic_write_jsonl

    from harness.store import check_output_file

    task = get_task(task_name)
    rows = read_jsonl(input_path, required=("response", *task.grade_fields))
    if not rows:
        raise HarnessError(f"{input_path}: no lines to grade")
    items = [task.item_from_record(record, f"{input_path}:{lineno}") for lineno, record in rows]
    responses = []
    for lineno, record in rows:
        if not isinstance(record["response"], str):
            raise HarnessError(f"{input_path}:{lineno}: 'response' must be a string")
        responses.append(record["response"])
    out = check_output_file(out or input_path.with_name(input_path.name.removesuffix(".jsonl") + ".graded.jsonl"))
    with progress_bar(transient=True) as bar:
        job = bar.add_task("grading", total=len(items), status="")
        grades = grade_many(task, items, responses, workers=workers or None, on_done=lambda k: bar.advance(job, k))
    atomic_write_jsonl(out, ({**record, **grade.to_dict()} for (_, record), grade in zip(rows, grades)))
    n_correct = sum(g.correct for g in grades)
    accuracy = n_correct / len(grades) if grades else 0.0
    console.print(f"graded n={len(grades)}: {n_correct} correct, accuracy {accuracy:.1%} -> {out}")


@app.command("methods")
@user_errors
def methods_command() -> None:
    """List the registered methods: kind, source paper, what they train and their default options."""
    from dataclasses import asdict

    from harness.method import METHODS

    table = Table(title="Methods")
    for column in ("name", "kind", "paper", "trains", "default options (--set method_options.KEY=VALUE)"):
        table.add_column(column)
    for name, cls in METHODS.items():
        options_class = cls.objective.options_class if cls.objective else None
        options = asdict(options_class()) if options_class else {}
        trains = cls.trains if cls.objective is None else f"{cls.trains}; evaluated at its {cls.checkpoint_select} checkpoint"
        cells = (name, cls.kind, cls.paper, trains, ", ".join(f"{k}={v}" for k, v in options.items()) or "-")
        table.add_row(*(escape(c) for c in cells))  # "[x, y1]" in a description is text, not rich markup
    console.print(table)


@app.command("models")
@user_errors
def models_command() -> None:
    """List the model aliases; any hub id, local folder or .gguf file works too."""
    from harness.models import ALIASES, cache_dir

    table = Table(title="Models")
    table.add_column("--model")
    table.add_column("what it is")
    for name, what in ALIASES.items():
        table.add_row(name + (" (default)" if name == "embedded" else ""), what)
    table.add_row("HUB_ID", "any Hugging Face causal LM, e.g. Qwen/Qwen2.5-1.5B-Instruct (bf16 on GPU, float32 on CPU)")
    table.add_row("PATH", "a local model folder, or a .gguf file (dequantized through transformers)")
    console.print(table)
    console.print(f"Converted and tiny models are cached under {cache_dir()} (HARNESS_CACHE_DIR).")


WAIT = typer.Option(False, "--wait", help="If another process is writing the run folder, wait for it to finish "
                                         "(default: stop with a line naming it).")
CHECKPOINT_SELECT = typer.Option(
    None, "--checkpoint-select", metavar="best|last|step-N",
    help="Which checkpoint of a training run: best (highest mean training reward r1 + r2 of the steps before it), "
         "last, or step-N (default: what the method's paper does: best for score, else last).")


@app.command("eval")
@user_errors
@options_from(RolloutSettings, into="rollout")
def eval_command(
    method: str = typer.Option("base", help="How attempt k+1 is asked for."),
    rollout: dict = None,  # RolloutSettings: task, model, split, limit, turns, seed, sampling, ..., data dir, out
    checkpoint: Optional[Path] = typer.Option(None, help="A training run folder: evaluate its trained policy."),
    checkpoint_select: Optional[str] = CHECKPOINT_SELECT,
    wait: bool = WAIT,
) -> None:
    """Roll out K-attempt self-correction episodes and print Acc@t1, Acc@t2, Δ, Δi→c, Δc→i.

    Samples are stored as they finish under results/runs/<id>/; rerunning the same command resumes
    and regenerates nothing already stored (a larger --limit extends the run).
    """
    from harness.evaluate import EvalConfig, evaluate
    from harness.terminal import metrics_table

    config = EvalConfig(method=method, **rollout_settings(rollout),
                        checkpoint=str(checkpoint) if checkpoint else None, checkpoint_select=checkpoint_select)
    config.adopt_trained_run()
    task, method, model = config.task, config.method, config.model
    from harness.method import feedback_label

    label = feedback_label(method, config.feedback)  # `rrr (oracle)` under the verifier's protocol
    with progress_bar() as bar:
        result = evaluate(config, eval_progress(bar, f"{task} · {label} · {model}"), wait)
    title = f"{task} ({config.split}) · {model} · {config.turns} turns (%, 95% CI)"
    console.print(metrics_table({label: result.metrics}, title=title))
    note = "all from the store" if result.generated_now == 0 else f"{result.generated_now} generated now"
    console.print(f"{result.metrics.n} problems ({note}), {result.tokens_per_problem:.0f} generated tokens per problem")
    if config.checkpoint:
        console.print(f"evaluated {Path(config.checkpoint) / 'checkpoints' / str(config.checkpoint_step)} "
                      f"(--checkpoint-select {config.checkpoint_select})", highlight=False, soft_wrap=True)
    console.print(f"run written to {result.run_dir}")


def _print_outputs(outputs, title: str, folder: Path) -> None:
    from harness.terminal import metrics_table

    if outputs.metrics:
        console.print(metrics_table(outputs.metrics, title=title))
        console.print("generated tokens per problem: " + ", ".join(f"{k} {v:.0f}" for k, v in outputs.tokens.items()))
    if any(row.diagnostics is not None for row in outputs.rows):
        from harness.terminal import diagnostics_table

        console.print(diagnostics_table(outputs.rows))
    names = ", ".join(str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p) for p in outputs.written)
    console.print(f"written to {folder}: {names}", highlight=False, soft_wrap=True)
    for warning in outputs.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


def _split_list(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@app.command("compare")
@user_errors
@options_from(RolloutSettings, into="rollout")
def compare_command(
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods (default: every training-free one); "
                                                     "a trained method needs its run in --checkpoints."),
    checkpoints: list[str] = typer.Option([], help="Training-run folders (repeat or comma-separate); each row is "
                                                   "labelled by the method its config.yaml names."),
    rollout: dict = None,  # RolloutSettings: task, model (the base), split, limit, ..., data dir, out, results dir
    reported: bool = typer.Option(False, "--reported", help="Add the papers' numbers reported for this task under "
                                                            "this --feedback protocol (e.g. SCoRe Tab. 2 for math500)."),
    checkpoint_select: Optional[str] = CHECKPOINT_SELECT,  # of each --checkpoints run
    wait: bool = WAIT,
) -> None:
    """Evaluate methods on the same problems, seeds and sampling settings; write tables (md, csv, tex) and plots.

    Every evaluation is a resumable run under RESULTS_DIR/runs/, so a rerun regenerates nothing stored.
    `harness report DIR` rebuilds the tables and plots from the stored samples, without a model.
    """
    from harness.compare import CompareConfig, plan, run_compare

    config = CompareConfig(**rollout_settings(rollout),
                           methods=_split_list([methods]) if methods is not None else None,
                           checkpoints=_split_list(checkpoints), reported=reported, checkpoint_select=checkpoint_select)
    prepared = plan(config)  # every check before any work: a bad input writes nothing
    with progress_bar() as bar:
        result = run_compare(prepared, lambda row: eval_progress(bar, f"{config.task} · {row.label} · {row.eval.model}"),
                             wait)
    done = ", ".join(f"{k} {'stored' if v == 0 else f'{v} generated now'}" for k, v in result.generated_now.items())
    console.print(f"{len(prepared.problem_ids)} problems per method ({done})")
    _print_outputs(result.outputs, f"{config.task} ({config.split}) · {config.model} · {config.turns} turns (%, 95% CI)",
                   result.folder)


@app.command("report")
@user_errors
def report_command(
    path: Path = typer.Argument(..., metavar="RUN_OR_COMPARE_DIR", help="A compare folder, eval run or training run."),
) -> None:
    """Regenerate tables and plots from stored samples and logs, without loading a model.

    A comparison folder gets its tables and plots back (byte-identical tables); an eval run gets
    table.md/csv/tex and plots beside its samples; a training run gets training_curves.png/pdf.
    """
    from harness.report import report

    outputs = report(path)
    _print_outputs(outputs, f"{outputs.title} (%, 95% CI)", path)


@app.command("regrade")
@user_errors
def regrade_command(
    path: Path = typer.Argument(..., metavar="RUN_OR_COMPARE_DIR", help="An eval run or a compare folder."),
    workers: int = typer.Option(0, help="Grading processes (default: one per core)."),
) -> None:
    """Grade stored samples again with today's graders (no model), then rebuild metrics, tables and plots.

    A compare folder regrades every run it references. Files are rewritten atomically, and only where a
    grade changed: a second regrade changes nothing. Prints how many verdicts flipped per attempt.
    """
    from harness.regrade import regrade

    result = regrade(path, workers or None)
    for run in result.runs:
        console.print(f"{run.run_dir.name}: {run.summary()}", highlight=False, soft_wrap=True)
    _print_outputs(result.outputs, f"{result.outputs.title} (%, 95% CI), regraded", path)


@app.command("train")
@user_errors
@options_from(RunSettings, into="run", unset=True)
def train_command(
    method: Optional[str] = typer.Option(None, help="A trained method: score, a2c2stage, rrr, pair-sft, star "
                                                    "(required unless --resume)."),
    preset: Optional[str] = typer.Option(None, help="cpu-tiny (tests), cpu-demo (embedded, a few steps), gpu-paper."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML file of TrainConfig fields."),
    max_steps: Optional[int] = typer.Option(None, help="Optimizer steps (with --rollout-tokens: the most it may take)."),
    rollout_tokens: Optional[int] = typer.Option(None, help="Token budget: stop once rollouts have generated this "
                                                 "many tokens (SFT methods spend it on their collections)."),
    run: dict = None,  # RunSettings: task, model, seed, sampling, backend, ... (unset: the preset's, else TrainConfig's)
    set_: list[str] = typer.Option([], "--set", help="Override any field: --set lr=1e-5 --set method_options.alpha=5."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder from its last checkpoint."),
    wait: bool = WAIT,
) -> None:
    """Train a self-correction method; writes config, manifest, log.jsonl, TensorBoard logs, checkpoints.

    Settings layer as: defaults < --preset < --config YAML < options < --set. --resume RUN_DIR continues
    a run exactly where its last checkpoint left it (same weights as an uninterrupted run on CPU).
    """
    from harness.training.config import load_train_config
    from harness.training.loop import train
    from harness.store import RunStore
    from harness.training.runlog import status_line

    out = run["out"]
    explicit = {"method": method, "max_steps": max_steps, "rollout_tokens": rollout_tokens, **run,
                "out": str(resume or out) if (resume or out) else None}
    if resume is not None:
        if out is not None and Path(out).resolve() != resume.resolve():
            raise HarnessError("give --resume RUN_DIR or --out, not both (a resumed run stays in its folder)")
        stored_config = RunStore(resume).training_config_file()  # refused (one line) unless a training run
        config_file = config_file or stored_config
    elif method is None:
        raise HarnessError("--method is required (score, a2c2stage, rrr, pair-sft, star), unless you --resume a run")
    config = load_train_config(preset, str(config_file) if config_file else None, set_, explicit)
    with progress_bar() as bar:
        job = bar.add_task(f"train {config.method} · {config.task} · {config.model}", total=config.max_steps,
                           status="loading")

        def show(step: int, total: int, logs: dict) -> None:
            bar.update(job, status=status_line(logs, config.rollout_tokens),
                       **({} if "collect_share" in logs else {"completed": step}))

        run_dir = train(config, resume=resume is not None, progress=show, wait=wait)
    console.print(f"run written to {run_dir} (checkpoints under {run_dir / 'checkpoints'}, log in {RunStore(run_dir).log_path})")


@app.command("lm-eval", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def lm_eval_command(ctx: typer.Context) -> None:
    """lm-eval's own CLI, with `--model selfcorrect` and the selfcorrect_* tasks added; ARGS pass unchanged.

    Example: harness lm-eval --model selfcorrect --model_args pretrained=Qwen/Qwen2.5-1.5B-Instruct,turns=2
    --tasks selfcorrect_gsm8k --apply_chat_template. `harness lm-eval --help` shows lm-eval's options.
    """
    from harness.lmeval import run_cli

    run_cli(list(ctx.args))


@app.command("lm-eval-path")
@user_errors
def lm_eval_path_command() -> None:
    """Print the folder of our lm-eval task configs, for `lm_eval --include_path "$(harness lm-eval-path)"`."""
    from harness.lmeval import tasks_dir

    print(tasks_dir())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
