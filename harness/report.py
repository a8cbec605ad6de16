"""`harness report`: tables and plots from what is stored (a run's samples, a training log, a
comparison's spec), never from a model.

`harness compare` and `harness report` both write through `write_compare_outputs`, so a report of a
comparison folder reproduces compare's tables byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.diagnostics import (RowDiagnostics, attempts, compute, episodes_csv, paired_mcnemar_p, row_diagnostics,
                                 training_tokens)
from harness.model_size import parameter_count
from harness.errors import HarnessError
from harness.method import feedback_label
from harness.metrics import TurnMetrics, score_samples
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


def score(samples: list[dict[str, Any]], turns: int) -> tuple[TurnMetrics, float]:
    """A table row's metrics and generated tokens per problem (no breakdowns: a row has none)."""
    overall, scored = score_samples(samples, turns, breakdowns=False)
    return overall, scored["tokens_per_problem"]


def older_grades(samples: list[dict[str, Any]]) -> int:
    """How many samples hold a grade from an older grader version (records before version 2 have none)."""
    from harness.task import GRADER_VERSION

    return sum(any(step.get("grade") and (step["grade"].get("grader_version") or 1) < GRADER_VERSION
                   for step in s.get("steps", [])) for s in samples)


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


def write_episodes(folder: Path, rows: dict[str, list[dict[str, Any]]], turns: int) -> list[Path]:
    """episodes.csv: the diagnostics of every episode of every diagnosed row (none: nothing written)."""
    return [atomic_write_text(folder / "episodes.csv", episodes_csv(rows, turns))] if rows else []


def _manifest_model(run_dir: Path) -> dict[str, Any] | None:
    """The model entry of a run's manifest.json (None when there is none or it is damaged)."""
    model = RunStore(run_dir).read_manifest().get("model")
    return model if isinstance(model, dict) else None


def diagnosed_row(label: str, metrics: TurnMetrics, tokens: float, samples: list[dict[str, Any]], turns: int,
                  run_dir: Path, training_run: Path | None = None, base: list[dict[str, Any]] | None = None):
    """A measured table row with its diagnostics, compute and (given `base`'s samples) paired p; records
    without their attempts' steps (hand-written or very old ones) give a row without diagnostics."""
    if not all(len(attempts(s, turns)) >= min(turns, 2) for s in samples):
        return measured_row(label, metrics, tokens)
    diagnostics = row_diagnostics(samples, turns)
    trained = None
    if training_run is not None:
        trained = training_tokens(RunStore(training_run).read_log())
    spent = compute(samples, parameter_count(_manifest_model(run_dir)), turns, trained)
    p_value = paired_mcnemar_p(base, samples) if base is not None else None
    return measured_row(label, metrics, tokens, diagnostics, spent, p_value)


def write_training_plot(run_dir: Path, stem: Path, title: str) -> list[Path]:
    from harness.plots import training_plot

    store = RunStore(run_dir)
    log = store.read_log()
    if not log:
        raise HarnessError(f"{store.log_path}: no training steps logged yet")
    return training_plot(log, title, stem)


def write_compare_outputs(folder: Path, spec: dict[str, Any]) -> Outputs:
    """Every table and plot of a comparison folder, from its compare.json `spec` and the runs' samples."""
    config = spec["config"]
    turns = config["turns"]
    out = Outputs("compare")
    for row in spec["rows"]:  # everything a table or plot needs is checked before anything is written
        if row.get("checkpoint") and not RunStore(folder / row["checkpoint"]).has_log():
            raise HarnessError(f"{folder / row['checkpoint']}: no training log for the training curves of {row['label']!r}")
    older = 0
    stored: dict[str, list[dict[str, Any]]] = {}
    for row in spec["rows"]:
        samples = stored[row["label"]] = RunStore(folder / row["run_dir"]).read_samples(spec["problem_ids"])
        out.metrics[row["label"]], out.tokens[row["label"]] = score(samples, turns)
        older += older_grades(samples)
    out.warnings += older_grades_warning(older, len(spec["rows"]) * len(spec["problem_ids"]), folder)
    base = next((stored[r["label"]] for r in spec["rows"] if r.get("method", r["label"]) == "base"
                 and not r.get("checkpoint")), None)
    rows = [diagnosed_row(r["label"], out.metrics[r["label"]], out.tokens[r["label"]], stored[r["label"]], turns,
                          folder / r["run_dir"], folder / r["checkpoint"] if r.get("checkpoint") else None,
                          base if r.get("method", r["label"]) != "base" or r.get("checkpoint") else None)
            for r in spec["rows"]]
    out.rows = list(rows)
    out.diagnostics = {row.label: row.diagnostics for row in rows if row.diagnostics is not None}
    citations: list[tuple[str, str]] = []
    if config.get("reported"):  # the papers' rows for this task, measured under this comparison's protocol
        protocol = config.get("feedback", "none")  # compare.json files from before --feedback: intrinsic
        rows += [table_reported_row(r) for r in reported_rows(config["task"], protocol)]
        citations = sources(config["task"], protocol)
    text = caption(config["task"], config["split"], config["model"], turns, config["temperature"], config["seed"])
    out.title = f"{config['task']} ({config['split']}), {config['model']}, n = {len(spec['problem_ids'])}"
    out.written += write_tables(folder, rows, turns, text, f"tab:selfcorrect-{slug(config['task'])}", citations)
    out.written += write_episodes(folder, {label: stored[label] for label in out.diagnostics}, turns)
    out.written += write_metric_plots(folder, out.metrics, out.title, out.diagnostics)
    for row in spec["rows"]:
        if row.get("checkpoint"):
            out.written += write_training_plot(folder / row["checkpoint"], folder / f"training-{slug(row['label'])}",
                                               f"Training: {row['label']} ({Path(row['checkpoint']).name})")
    return out


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
        out.written = write_training_plot(path, path / "training_curves", f"Training: {path.name}")
        return out
    raise HarnessError(f"{path}: not a comparison (compare.json), eval run (samples.jsonl) or training run (log.jsonl)")


def _report_eval_run(path: Path) -> Outputs:
    store = RunStore(path)
    config = store.read_config() if store.has_config() else {}
    turns = int(config.get("turns", 2))
    label = feedback_label(config.get("method", "run"), config.get("feedback", "none"))
    samples = store.read_samples()  # file order: the problems' order for runs grown by --limit
    if config.get("limit"):
        samples = samples[: int(config["limit"])]  # the last eval's --limit, as its metrics.json
    out = Outputs("eval")
    out.metrics[label], out.tokens[label] = score(samples, turns)
    out.warnings += older_grades_warning(older_grades(samples), len(samples), path)
    task, split, model = config.get("task", "?"), config.get("split", "?"), config.get("model", "?")
    text = caption(task, split, model, turns, float(config.get("temperature", 0.0)), int(config.get("seed", 0)))
    out.title = f"{task} ({split}), {model}, n = {len(samples)}"
    rows = [diagnosed_row(label, out.metrics[label], out.tokens[label], samples, turns, path)]
    out.rows = list(rows)
    out.diagnostics = {label: rows[0].diagnostics} if rows[0].diagnostics is not None else {}
    out.written += write_tables(path, rows, turns, text, f"tab:selfcorrect-{slug(task)}")
    out.written += write_episodes(path, {label: samples} if out.diagnostics else {}, turns)
    out.written += write_metric_plots(path, out.metrics, out.title, out.diagnostics)
    return out
