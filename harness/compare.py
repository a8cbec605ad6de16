"""`harness compare`: every chosen method on the same problems with the same sampling settings and seed.

Training-free methods run through `evaluate()` directly; trained ones through their training-run
folders (`--checkpoints`). Each evaluation is an ordinary resumable run under `results/runs/`, so a
rerun reuses every stored sample. The comparison lands in `results/compare/<task>-<id>/` (id = a
short hash of the comparison's identity) with compare.json, manifest.json, tables and plots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from harness.report import Outputs, summarize_rows, write_compare_outputs
from harness.errors import HarnessError, warn
from harness.store import CompareFolder, RunStore, run_hash
from harness.evaluate import EvalConfig, RolloutSettings, evaluate

IDENTITY = ("task", "split", "methods", "checkpoints", "model", "limit", "turns", "seed", "max_new_tokens",
            "temperature", "top_p", "dtype")


@dataclass
class CompareConfig(RolloutSettings):
    """The shared rollout settings (`out` is the comparison folder [default:
    <results_dir>/compare/<task>-<id>]), and what is compared."""

    methods: list[str] | None = None  # None: every registered training-free method
    checkpoints: list[str] = field(default_factory=list)  # training-run folders of trained methods
    reported: bool = False  # add the papers' numbers (harness.paper_numbers) as rows
    # Which checkpoint of each --checkpoints run: best | last | step-N (None: each method's default,
    # Method.checkpoint_select); a trained row's label names it, e.g. `score (best: step-12)`.
    checkpoint_select: str | None = None

    def settings(self) -> dict[str, Any]:
        found = super().settings()
        if found.get("checkpoint_select") is None:  # comparisons without it keep their compare.json
            found.pop("checkpoint_select", None)
        return found

    def identity(self) -> dict[str, Any]:
        settings = self.settings()
        found = {key: settings[key] for key in IDENTITY}
        if "auto_dtype" in settings:  # auto means bf16 here (see RolloutSettings.settings)
            found["auto_dtype"] = settings["auto_dtype"]
        from harness.rollout.backend import resolve_backend

        backend = resolve_backend(self.backend, self.device, self.model)
        if backend in ("vllm", "llamacpp"):  # hf comparisons keep their folders
            found["backend"] = backend
        if self.feedback != "none":  # intrinsic comparisons keep the ids they had before --feedback
            found["feedback"] = self.feedback
        if self.checkpoint_select is not None:  # absent when each method's default applies: ids kept
            found["checkpoint_select"] = self.checkpoint_select
        return found

    def compare_id(self) -> str:
        return run_hash(self.identity())

    def folder(self) -> Path:
        return Path(self.out) if self.out else Path(self.results_dir) / "compare" / f"{self.task}-{self.compare_id()}"


@dataclass
class PlannedRow:
    label: str
    method: str
    eval: EvalConfig
    checkpoint: str | None = None


@dataclass
class Plan:
    config: CompareConfig
    rows: list[PlannedRow]
    problem_ids: list[str]


@dataclass
class CompareResult:
    folder: Path
    outputs: Outputs
    generated_now: dict[str, int]


def _trained_run(path: str, model: str) -> tuple[str, str]:
    """(method, base model) of a training-run folder, after checking it holds a checkpoint."""
    from harness.checkpoint import require_checkpoint

    run = Path(path)
    require_checkpoint(run)
    trained = RunStore(run).read_training_config()
    if trained["model"] != model:
        raise HarnessError(f"{run} was trained from model {trained['model']!r}, not --model {model!r}; "
                           "a comparison needs one base model")
    return trained["method"], trained["model"]


def plan(config: CompareConfig) -> Plan:
    """Check everything a comparison needs, before any work: raises HarnessError, writes nothing."""
    from harness.config import check_fields
    from harness.method import METHODS, feedback_label
    from harness.task import get_task

    check_fields(config, "--")  # set by the CLI options of compare
    check_fields(config.sampling, "--")
    task = get_task(config.task)
    task.check_split(config.split)
    if config.checkpoint_select is not None:
        from harness.checkpoint import parse_selection

        config.checkpoint_select = parse_selection(config.checkpoint_select)  # one line before any work
        if not config.checkpoints:
            raise HarnessError("--checkpoint-select chooses among the checkpoints of --checkpoints runs; none given")
    config.checkpoints = [os.path.normpath(c) for c in config.checkpoints]
    if len(set(config.checkpoints)) != len(config.checkpoints):
        raise HarnessError("--checkpoints names a folder twice")
    trained = [(c, *_trained_run(c, config.model)) for c in config.checkpoints]
    if config.methods is None:
        config.methods = [m for m in METHODS.names() if METHODS.get(m).kind == "prompting"]
    if len(set(config.methods)) != len(config.methods):
        raise HarnessError("--methods names a method twice")
    for name in config.methods + [method for _, method, _ in trained]:
        METHODS.get(name)  # unknown method: one line, exit 2
    runs_of = {m: [c for c, method, _ in trained if method == m] for m in {method for _, method, _ in trained}}
    for name in config.methods:
        if METHODS.get(name).kind != "prompting" and not runs_of.get(name):
            raise HarnessError(f"method {name!r} is trained ({METHODS.get(name).kind}): "
                               f"give its training-run folder with --checkpoints")
    order = config.methods + sorted(set(runs_of) - set(config.methods), key=[m for _, m, _ in trained].index)
    shared = {f.name: getattr(config, f.name) for f in fields(RolloutSettings) if f.name != "out"}
    rows: list[PlannedRow] = []
    for name in order:
        # Rows evaluated with the verifier's signal say so: `rrr (oracle)`; intrinsic rows keep plain labels.
        if not runs_of.get(name):
            rows.append(PlannedRow(feedback_label(name, config.feedback), name, EvalConfig(method=name, **shared)))
            continue
        for run in runs_of[name]:
            label = name if len(runs_of[name]) == 1 else f"{name} ({Path(run).name})"
            rows.append(PlannedRow(feedback_label(label, config.feedback), name,
                                   EvalConfig(method=name, checkpoint=run, **shared), run))
    if not rows:
        raise HarnessError("nothing to compare: give --methods or --checkpoints")
    labels = [row.label for row in rows]
    if len(set(labels)) != len(labels):  # e.g. a/run and b/run of one method: the table is keyed by label
        twice = next(label for label in labels if labels.count(label) > 1)
        raise HarnessError(f"two rows would both be labelled {twice!r}: give the training runs distinct folder names")
    for row in rows:
        if row.checkpoint is not None:
            row.eval.checkpoint_select = config.checkpoint_select
        row.eval.validate()
        if row.checkpoint is not None:  # the row names the checkpoint it evaluates: `score (best: step-12)`
            from harness.checkpoint import selection_label

            row.label = f"{row.label} ({selection_label(row.eval.checkpoint_select, row.eval.checkpoint_step)})"
        # A run folder that exists must hold the same settings (evaluate() would refuse it mid-way).
        row.eval.check_folder("delete it")
    folder = config.folder()
    if folder.exists() and not folder.is_dir():
        raise HarnessError(f"{folder}: exists and is not a folder")
    if CompareFolder(folder).stored_id() not in (None, config.compare_id()):
        raise HarnessError(f"{folder} holds another comparison; choose another --out or delete it")
    items = task.load(config.split, config.data_dir)[: config.limit]
    if not items:
        raise HarnessError(f"{config.task} {config.split}: no problems")
    return Plan(config, rows, [item.id for item in items])


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def run_compare(prepared: Plan, progress: Callable[[PlannedRow], Callable[..., Any] | None] | None = None,
                wait: bool = False) -> CompareResult:
    """Evaluate every planned row (resuming from stored samples), then write the comparison folder.
    `wait`: a row whose run folder another process is writing waits for it instead of failing."""
    from harness.data import local_data_files
    from harness.manifest import build_manifest
    from harness.task import get_task

    config = prepared.config
    folder = config.folder()
    generated: dict[str, int] = {}
    run_dirs: dict[str, Path] = {}
    for row in prepared.rows:
        result = evaluate(row.eval, progress(row) if progress else None, wait)
        generated[row.label] = result.generated_now
        run_dirs[row.label] = result.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "id": config.compare_id(),
        "config": config.settings(),
        "problem_ids": prepared.problem_ids,
        "rows": [{"label": row.label, "method": row.method, "model": row.eval.model,
                  "trained": row.checkpoint is not None,
                  "checkpoint": _relative(Path(row.checkpoint), folder) if row.checkpoint else None,
                  **({"checkpoint_step": row.eval.checkpoint_step, "checkpoint_select": row.eval.checkpoint_select}
                     if row.checkpoint else {}),
                  "run_dir": _relative(run_dirs[row.label], folder)} for row in prepared.rows],
    }
    store = CompareFolder(folder)
    with store.lock(wait, on_wait=lambda who: warn(f"{folder}: waiting for {who}")):  # one writer of its files
        outputs = write_compare_outputs(folder, spec)  # tables and plots, from the stored samples
        summarize_rows(spec, outputs)
        models = {label: RunStore(run_dir).read_manifest().get("model") for label, run_dir in run_dirs.items()}
        task = get_task(config.task)
        manifest = store.write_manifest(build_manifest(
            config.settings(), config.seed, {"spec": config.model, "runs": models},
            local_data_files(config.data_dir, task.data_files(config.split))))
        outputs.written[:0] = [store.write_spec(spec), manifest]
    return CompareResult(folder, outputs, generated)
