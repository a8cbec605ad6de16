"""`harness report`: tables and plots from what is stored (a run's samples, a training log, a
comparison's spec), never from a model.

Each table row's run is loaded once (`load_row`: its episodes, metrics, the model's N, a trained row's
training log), every input checked before anything is written; the tables, episodes.csv and plots are
rendered from the loaded rows. `harness compare` and `harness report` both write through
`write_compare_outputs`, so a report of a comparison folder reproduces compare's tables byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.diagnostics import RowDiagnostics, compute, episodes_csv, paired_mcnemar_p, row_diagnostics, training_tokens
from harness.errors import HarnessError
from harness.method import feedback_label
from harness.metrics import TurnMetrics, score_episodes
from harness.model_size import parameter_count
from harness.rollout.episode import Episode, read_episodes
from harness.paper_numbers import reported_rows, sources
from harness.store import CompareFolder, RunStore, atomic_write_text, folder_kind
from harness.tables import TableRow, measured_row, render_csv, render_latex, render_markdown
from harness.tables import reported_row as table_reported_row


@dataclass
class Outputs:
    kind: str  # "compare" | "eval" | "train"
    title: str = ""
    metrics: dict[str, TurnMetrics] = field(default_factory=dict)  # label -> metrics of measured rows
    tokens: dict[str, float] = field(default_factory=dict)  # label -> generated tokens per problem
    diagnostics: dict[str, RowDiagnostics] = field(default_factory=dict)  # label -> edit ratios, transitions
    rows: list[TableRow] = field(default_factory=list)  # the measured table rows
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # one line each, for the terminal


@dataclass
class LoadedRow:
    """One table row's run, read once: its episodes (the compared problems, in their order), its metrics
    and generated tokens per problem, its manifest's model entry (the model's N, for the compute columns)
    and, for a trained row, its training run's log (training FLOPs, curves)."""

    label: str
    episodes: list[Episode]
    metrics: TurnMetrics
    tokens: float
    model: dict[str, Any] | None
    training_log: list[dict[str, Any]] | None = None
    older_grades: int = 0  # episodes holding a grade from an older grader version


def load_row(label: str, run_dir: Path, turns: int, ids: list[str] | None = None, limit: int | None = None,
             training_run: Path | None = None) -> LoadedRow:
    """Read one row's run (`ids`: those problems in that order; else the file's, the first `limit`)."""
    from harness.task import GRADER_VERSION

    store = RunStore(run_dir)
    episodes = read_episodes(run_dir, ids)[:limit]
    log = RunStore(training_run).read_log() if training_run is not None else None  # the row's training curves
    model = store.read_manifest().get("model")
    overall, scored = score_episodes(episodes, turns, breakdowns=False)  # a table row has no breakdowns
    older = sum(any(s.grade is not None and (s.grade.grader_version or 1) < GRADER_VERSION for s in e.steps)
                for e in episodes)  # records before version 2 name none
    return LoadedRow(label, episodes, overall, scored["tokens_per_problem"], model if isinstance(model, dict) else None,
                     log, older)


def older_grades_warning(count: int, total: int, folder: Path) -> list[str]:
    from harness.task import GRADER_VERSION

    if not count:
        return []
    return [f"{count} of {total} samples were graded by an older grader version (now {GRADER_VERSION}); "
            f"`harness regrade {folder}` grades them again"]


def summarize_rows(spec: dict[str, Any], outputs: Outputs) -> None:
    """Put each row's n, tokens per problem and metrics into a compare.json `spec` (in place)."""
    table = {row.label: row for row in outputs.rows}
    for row in spec["rows"]:
        metrics = outputs.metrics[row["label"]]
        row.update(n=metrics.n, tokens_per_problem=outputs.tokens[row["label"]], metrics=metrics.to_dict())
        found = table.get(row["label"])
        if found is not None and found.diagnostics is not None and found.compute is not None:
            d, c = found.diagnostics, found.compute
            row["diagnostics"] = {"answer_changed": d.answer_changed, "median_edit_ratio": d.median_edit_ratio,
                                  "transitions": d.transitions, "mcnemar_p_vs_base": found.p_vs_base,
                                  "generated_tokens": c.generated_tokens, "prefill_tokens": c.prefill_tokens,
                                  "seconds": c.seconds, "parameters": c.parameters,
                                  "inference_flops": c.inference_flops, "training_flops": c.training_flops}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def caption(task: str, split: str, model: str, turns: int, temperature: float, seed: int) -> str:
    decoding = "greedy decoding" if temperature == 0 else f"temperature {temperature:g}"
    return f"Self-correction on {task} ({split}) with {model}, {turns} attempts, {decoding}, seed {seed}"


def write_tables(folder: Path, rows: list[TableRow], turns: int, text: str, label: str,
                 citations: list[tuple[str, str]] = ()) -> list[Path]:
    return [atomic_write_text(folder / "table.md", render_markdown(rows, turns, text, citations)),
            atomic_write_text(folder / "table.csv", render_csv(rows, turns)),
            atomic_write_text(folder / "table.tex", render_latex(rows, turns, text, label))]


def write_metric_plots(folder: Path, metrics: dict[str, TurnMetrics], title: str,
                       diagnostics: dict[str, RowDiagnostics] | None = None) -> list[Path]:
    from harness.plots import accuracy_plot, attempts_plot, edit_ratio_plot, flips_plot, transitions_plot

    written = accuracy_plot(metrics, title, folder / "accuracy") + flips_plot(metrics, title, folder / "flips")
    if max(len(m.accuracy) for m in metrics.values()) > 2:
        written += attempts_plot(metrics, title, folder / "accuracy_by_attempt")
    if diagnostics:
        written += edit_ratio_plot(diagnostics, title, folder / "edit_ratio")
        written += transitions_plot(diagnostics, title, folder / "transitions")
    return written


def write_episodes(folder: Path, rows: dict[str, list[Episode]], turns: int) -> list[Path]:
    """episodes.csv: the diagnostics of every episode of every diagnosed row (none: nothing written)."""
    return [atomic_write_text(folder / "episodes.csv", episodes_csv(rows, turns))] if rows else []


def table_row(row: LoadedRow, turns: int, base: LoadedRow | None = None) -> TableRow:
    """A measured table row with its diagnostics, compute and (given the `base` row) paired p; a row whose
    episodes hold fewer than two attempts has nothing to diagnose."""
    if not all(len(e.attempts_within(turns)) >= 2 for e in row.episodes):
        return measured_row(row.label, row.metrics, row.tokens)
    diagnostics = row_diagnostics(row.episodes, turns)
    trained = training_tokens(row.training_log) if row.training_log is not None else None
    spent = compute(row.episodes, parameter_count(row.model), turns, trained)
    p_value = paired_mcnemar_p(base.episodes, row.episodes) if base is not None else None
    return measured_row(row.label, row.metrics, row.tokens, diagnostics, spent, p_value)


def write_training_plot(log: list[dict[str, Any]], stem: Path, title: str) -> list[Path]:
    from harness.plots import training_plot

    return training_plot(log, title, stem)


def write_compare_outputs(folder: Path, spec: dict[str, Any]) -> Outputs:
    """Every table and plot of a comparison folder, from its compare.json `spec` and the runs' samples."""
    config = spec["config"]
    turns = config["turns"]
    out = Outputs("compare")
    # Every row's run is read (and every input checked) before anything is written.
    loaded = [load_row(r["label"], folder / r["run_dir"], turns, spec["problem_ids"],
                       training_run=folder / r["checkpoint"] if r.get("checkpoint") else None) for r in spec["rows"]]
    out.warnings += older_grades_warning(sum(row.older_grades for row in loaded),
                                         len(spec["rows"]) * len(spec["problem_ids"]), folder)
    untrained_base = [r.get("method", r["label"]) == "base" and not r.get("checkpoint") for r in spec["rows"]]
    base = next((row for row, is_base in zip(loaded, untrained_base) if is_base), None)
    rows = [table_row(row, turns, None if is_base else base) for row, is_base in zip(loaded, untrained_base)]
    _fill(out, loaded, rows)
    citations: list[tuple[str, str]] = []
    if config.get("reported"):  # the papers' rows for this task, measured under this comparison's protocol
        protocol = config.get("feedback", "none")  # compare.json files from before --feedback: intrinsic
        rows += [table_reported_row(r) for r in reported_rows(config["task"], protocol)]
        citations = sources(config["task"], protocol)
    text = caption(config["task"], config["split"], config["model"], turns, config["temperature"], config["seed"])
    out.title = f"{config['task']} ({config['split']}), {config['model']}, n = {len(spec['problem_ids'])}"
    out.written += write_tables(folder, rows, turns, text, f"tab:selfcorrect-{slug(config['task'])}", citations)
    out.written += write_episodes(folder, {row.label: row.episodes for row in loaded if row.label in out.diagnostics},
                                  turns)
    out.written += write_metric_plots(folder, out.metrics, out.title, out.diagnostics)
    for row, r in zip(loaded, spec["rows"]):
        if row.training_log is not None:
            out.written += write_training_plot(row.training_log, folder / f"training-{slug(row.label)}",
                                               f"Training: {row.label} ({Path(r['checkpoint']).name})")
    return out


def _fill(out: Outputs, loaded: list[LoadedRow], rows: list[TableRow]) -> None:
    """The loaded rows' metrics, tokens, table rows and diagnostics, into the outputs."""
    for row in loaded:
        out.metrics[row.label], out.tokens[row.label] = row.metrics, row.tokens
    out.rows = list(rows)
    out.diagnostics = {row.label: row.diagnostics for row in rows if row.diagnostics is not None}


def report(path: Path) -> Outputs:
    """Regenerate a comparison folder's, an eval run's or a training run's tables and plots."""
    path = Path(path)
    if not path.is_dir():
        raise HarnessError(f"{path}: no such folder")
    kind = folder_kind(path)
    if kind == "compare":
        return write_compare_outputs(path, CompareFolder(path).read_spec())
    if kind == "eval":
        return _report_eval_run(path)
    if kind == "train":
        out = Outputs("train", title=path.name)
        out.written = write_training_plot(RunStore(path).read_log(), path / "training_curves", f"Training: {path.name}")
        return out
    raise HarnessError(f"{path}: not a comparison (compare.json), eval run (samples.jsonl) or training run (log.jsonl)")


def _report_eval_run(path: Path) -> Outputs:
    store = RunStore(path)
    config = store.read_config() if store.has_config() else {}
    turns = int(config.get("turns", 2))
    label = feedback_label(config.get("method", "run"), config.get("feedback", "none"))
    # file order: the problems' order for runs grown by --limit; the last eval's --limit, as its metrics.json
    row = load_row(label, path, turns, limit=int(config["limit"]) if config.get("limit") else None)
    out = Outputs("eval")
    out.warnings += older_grades_warning(row.older_grades, len(row.episodes), path)
    task, split, model = config.get("task", "?"), config.get("split", "?"), config.get("model", "?")
    text = caption(task, split, model, turns, float(config.get("temperature", 0.0)), int(config.get("seed", 0)))
    out.title = f"{task} ({split}), {model}, n = {len(row.episodes)}"
    rows = [table_row(row, turns)]
    _fill(out, [row], rows)
    out.written += write_tables(path, rows, turns, text, f"tab:selfcorrect-{slug(task)}")
    out.written += write_episodes(path, {label: row.episodes} if out.diagnostics else {}, turns)
    out.written += write_metric_plots(path, out.metrics, out.title, out.diagnostics)
    return out
