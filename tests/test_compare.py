"""`harness compare` and `harness report`: tables and plots from stored samples, byte-identical reruns."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.compare import CompareConfig, plan
from harness.errors import HarnessError
from harness.metrics import self_correction_metrics
from harness.paper_numbers import REPORTED, reported_rows

runner = CliRunner()
TABLES = ("table.md", "table.csv", "table.tex")
STATS = ("delta", "i_to_c", "c_to_i")


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def assert_row_matches(row: dict[str, str], samples: list[dict], turns: int) -> None:
    """Every number of a CSV row equals harness.metrics over the samples (percent in the CSV)."""
    m = self_correction_metrics([s["correct"][:turns] for s in samples])
    estimates = {f"acc_t{k + 1}": a for k, a in enumerate(m.accuracy)}
    estimates.update(delta=m.delta, i_to_c=m.incorrect_to_correct, c_to_i=m.correct_to_incorrect)
    for key, est in estimates.items():
        for part, value in (("", est.value), ("_low", est.low), ("_high", est.high)):
            assert float(row[f"{key}{part}_pct"]) == pytest.approx(value * 100, abs=1e-7), (key, part)
    assert int(row["n"]) == m.n == len(samples)
    assert float(row["mcnemar_p"]) == pytest.approx(m.mcnemar_p)
    assert float(row["tokens_per_problem"]) == pytest.approx(sum(s["generated_tokens"] for s in samples) / len(samples))


def snapshot(folder: Path, names) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


def test_compare_writes_tables_and_plots_and_report_reproduces_them(tmp_path, data_dir):
    results = tmp_path / "results"
    args = ["compare", "--task", "gsm8k", "--model", "tiny-random", "--methods", "base,self-refine", "--limit", "8",
            "--max-new-tokens", "16", "--data-dir", str(data_dir), "--results-dir", str(results), "--reported"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    [folder] = list((results / "compare").iterdir())
    assert folder.name.startswith("gsm8k-") and len(folder.name) == len("gsm8k-") + 8
    plots = [f"{stem}.{ext}" for stem in ("accuracy", "flips", "edit_ratio", "transitions") for ext in ("png", "pdf")]
    for name in (*TABLES, *plots, "compare.json", "manifest.json"):
        assert (folder / name).stat().st_size > 0, name
    assert not list(folder.glob(".*.tmp"))
    assert "Acc@t1" in first.output and f"written to {folder}" in first.output.replace("\n", "")
    assert (folder / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "accuracy.pdf").read_bytes()[:5] == b"%PDF-"

    # table numbers = harness.metrics over the stored samples, in the compared problems' order
    spec = json.loads((folder / "compare.json").read_text())
    assert [r["label"] for r in spec["rows"]] == ["base", "self-refine"]
    assert spec["problem_ids"] == [f"gsm8k/test/{i}" for i in range(8)]
    rows = read_csv(folder / "table.csv")
    measured = [r for r in rows if r["kind"] == "measured"]
    assert [r["method"] for r in measured] == ["base", "self-refine"]
    for row, stored in zip(measured, spec["rows"]):
        lines = (folder / stored["run_dir"] / "samples.jsonl").read_text().splitlines()
        by_id = {s["id"]: s for s in map(json.loads, lines)}
        assert_row_matches(row, [by_id[i] for i in spec["problem_ids"]], turns=2)
        assert stored["metrics"]["n"] == 8

    # --reported: no paper reported GSM8K, so no reported rows and no citations (issue 21; the papers' rows
    # on the tasks they reported, and how they render, are in tests/test_paper_numbers.py)
    assert [r for r in rows if r["kind"] == "reported"] == [] and reported_rows("gsm8k") == []
    assert len(REPORTED) == 21
    markdown = (folder / "table.md").read_text()
    assert "(reported" not in markdown and "arXiv:2409.12917" not in markdown
    assert "| base | 0.0 [0.0, 0.0] |" in markdown
    tex = (folder / "table.tex").read_text()
    accuracy_table, diagnostics_table = tex.split(r"\end{table}")[:2]
    assert r"\toprule" in tex and r"\bottomrule" in tex and accuracy_table.count(r"\midrule") == 1
    assert "Diagnostics and compute" in diagnostics_table and diagnostics_table.count(r"\midrule") == 1

    # compute: N recorded in each run's manifest at generation time; FLOPs = 2·N·(generated + prefill)
    for row, stored in zip(measured, spec["rows"]):
        model = json.loads((folder / stored["run_dir"] / "manifest.json").read_text())["model"]
        assert int(row["parameters"]) == model["parameters"] > 0
        assert float(row["inference_flops"]) == 2 * model["parameters"] * (
            int(row["generated_tokens_total"]) + int(row["prefill_tokens_total"]))
        assert stored["diagnostics"]["inference_flops"] == float(row["inference_flops"])
    assert measured[0]["mcnemar_p_vs_base"] == "" and 0 < float(measured[1]["mcnemar_p_vs_base"]) <= 1

    # report regenerates byte-identical tables (and plots), twice over, without a model
    written = snapshot(folder, (*TABLES, *plots))
    for _ in range(2):
        again = runner.invoke(app, ["report", str(folder)])
        assert again.exit_code == 0, again.output
        assert snapshot(folder, (*TABLES, *plots)) == written

    # a rerun of compare comes from the store and writes the same tables
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0 and "base stored, self-refine stored" in rerun.output
    assert snapshot(folder, TABLES) == {k: written[k] for k in TABLES}

    # report on one eval run: tables beside its samples, equal to its metrics.json
    run = folder / spec["rows"][1]["run_dir"]
    one = runner.invoke(app, ["report", str(run)])
    assert one.exit_code == 0, one.output
    [row] = read_csv(run / "table.csv")
    assert float(row["tokens_per_problem"]) == json.loads((run / "metrics.json").read_text())["tokens_per_problem"]


@pytest.mark.parametrize("extra, message", [
    (["--methods", "base,nope"], "unknown method 'nope'"),
    (["--methods", "base", "--limit", "0"], "--limit must be >= 1"),
    (["--methods", "base,score"], "method 'score' is trained"),
    (["--methods", "base", "--checkpoints", "EMPTY"], "no checkpoint found"),
    (["--methods", "base", "--checkpoints", "MISSING"], "no such run folder"),
    (["--task", "nope"], "unknown task 'nope'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, data_dir, extra, message):
    (tmp_path / "empty-run").mkdir()
    extra = [str(tmp_path / "empty-run") if a == "EMPTY" else str(tmp_path / "missing") if a == "MISSING" else a
             for a in extra]
    results = tmp_path / "results"
    result = runner.invoke(app, ["compare", "--model", "tiny-random", "--data-dir", str(data_dir),
                                 "--results-dir", str(results), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not results.exists()


def fake_training_run(path: Path, method: str = "score", model: str = "tiny-random") -> Path:
    (path / "checkpoints" / "step-000002").mkdir(parents=True)
    (path / "checkpoints" / "step-000002" / "trainer_state.json").write_text('{"step": 2}')
    (path / "config.yaml").write_text(yaml.safe_dump({"method": method, "model": model, "task": "gsm8k"}))
    log = [{"step": s, "r1": 0.1 * s, "r2": 0.15 * s, "delta": 0.05 * s, "kl1": 0.01 * s, "kl2": 0.02 * s}
           for s in (1, 2, 3)]
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return path


def test_plan_labels_trained_rows_by_their_method(tmp_path, data_dir):
    trained = fake_training_run(tmp_path / "train-score-x")
    config = CompareConfig(methods=["base", "score"], checkpoints=[str(trained)], model="tiny-random",
                           limit=3, data_dir=str(data_dir), results_dir=str(tmp_path / "results"))
    prepared = plan(config)
    # The trained row names its checkpoint: score's default is best, which is the last one here (no reward recorded).
    assert [(r.label, r.method, r.checkpoint) for r in prepared.rows] == [("base", "base", None),
                                                                           ("score (last: step-2)", "score", str(trained))]
    assert prepared.rows[1].eval.checkpoint == str(trained) and prepared.rows[1].eval.model == "tiny-random"
    assert prepared.problem_ids == ["gsm8k/test/0", "gsm8k/test/1", "gsm8k/test/2"]
    other = CompareConfig(methods=["base"], checkpoints=[str(trained)], model="embedded", data_dir=str(data_dir))
    with pytest.raises(HarnessError, match="trained from model 'tiny-random'"):
        plan(other)
    assert config.compare_id() != CompareConfig(methods=["base", "score"], checkpoints=[str(trained)],
                                                model="tiny-random", limit=4).compare_id()
    assert not (tmp_path / "results").exists()


def fake_eval_run(path: Path, method: str, correct: np.ndarray) -> list[dict]:
    """A stored eval run whose episodes have these verdicts (rows: problems, columns: attempts)."""
    from harness.rollout.episode import Episode, Step
    from harness.task import Grade, Item

    path.mkdir(parents=True)
    samples = [Episode(Item(f"gsm8k/test/{i}", "q", "1"),
                       [Step("attempt", [{"role": "user", "content": "q"}], f"answer {k} {bool(c)}", 5, 10 + i if k == 0
                             else 0, True, 0.1, Grade(bool(c), "1" if c else "2", "")) for k, c in enumerate(row)]
                       ).to_record() for i, row in enumerate(correct)]
    (path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (path / "config.yaml").write_text(yaml.safe_dump({"task": "gsm8k", "split": "test", "method": method,
                                                      "model": "tiny-random", "turns": 3, "limit": None,
                                                      "temperature": 0.0, "seed": 0}))
    return samples


def test_report_tables_equal_the_metrics_of_the_samples(tmp_path):
    """Non-trivial numbers (K = 3, mixed flips): every table cell is harness.metrics over the samples."""
    rng = np.random.default_rng(7)
    runs = tmp_path / "results" / "runs"
    samples = {m: fake_eval_run(runs / m, m, rng.random((40, 3)) < p) for m, p in (("base", 0.4), ("self-refine", 0.6))}
    trained = fake_training_run(runs / "train-score")
    folder = tmp_path / "results" / "compare" / "gsm8k-synthetic"
    folder.mkdir(parents=True)
    ids = [f"gsm8k/test/{i}" for i in range(40)]
    spec = {"id": "synthetic", "problem_ids": ids[::-1],  # the comparison's order, not the file's
            "config": {"task": "gsm8k", "split": "test", "model": "tiny-random", "turns": 3, "temperature": 0.0,
                       "seed": 0, "reported": False},
            "rows": [{"label": "base", "run_dir": "../../runs/base", "checkpoint": None},
                     {"label": "self-refine", "run_dir": "../../runs/self-refine",
                      "checkpoint": "../../runs/train-score"}]}
    (folder / "compare.json").write_text(json.dumps(spec))
    result = runner.invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    rows = read_csv(folder / "table.csv")
    assert [r["method"] for r in rows] == ["base", "self-refine"] and "acc_t3_pct" in rows[0]
    for row, method in zip(rows, ("base", "self-refine")):
        assert 0 < float(row["acc_t1_pct"]) < 100
        assert_row_matches(row, samples[method][::-1], turns=3)
    for stem in ("accuracy", "flips", "accuracy_by_attempt", "training-self-refine"):
        assert (folder / f"{stem}.png").is_file() and (folder / f"{stem}.pdf").is_file(), stem
    m = self_correction_metrics([s["correct"] for s in samples["base"][::-1]])
    a = m.accuracy[0]
    assert f"| base | {a.value * 100:.1f} [{a.low * 100:.1f}, {a.high * 100:.1f}] |" in (folder / "table.md").read_text()

    # an eval run folder: tables beside its samples; a training run folder: its curves
    assert runner.invoke(app, ["report", str(runs / "base")]).exit_code == 0
    [row] = read_csv(runs / "base" / "table.csv")
    assert_row_matches(row, samples["base"], turns=3)
    assert runner.invoke(app, ["report", str(trained)]).exit_code == 0
    assert (trained / "training_curves.png").is_file() and (trained / "training_curves.pdf").is_file()
    bad = runner.invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "not a comparison" in bad.output


def test_report_rebuilds_the_committed_reference_tables_byte_for_byte(tmp_path):
    """The reference comparison in results/reference was written by `harness compare`; `report` on a copy
    must give back exactly the committed tables (the numbers and their format cannot drift unnoticed)."""
    import shutil

    from harness.report import report

    source = Path(__file__).resolve().parents[1] / "results" / "reference"
    folders = sorted((source / "compare").iterdir())
    assert folders
    copy = tmp_path / "reference"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("checkpoints"))
    for folder in folders:
        report(copy / "compare" / folder.name)
        for name in ("table.md", "table.csv", "table.tex", "episodes.csv"):
            assert (copy / "compare" / folder.name / name).read_bytes() == (folder / name).read_bytes(), name


def test_training_curves_are_smoothed_by_a_trailing_mean():
    from harness.plots import moving_average

    nan = float("nan")
    assert moving_average([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3) == [1.0, 1.5, 2.0, 3.0, 4.0, 5.0]
    smoothed = moving_average([nan, 2.0, nan, 4.0], 2)  # a step without the key (NaN) is skipped, not zero
    assert smoothed[0] != smoothed[0] and smoothed[1:] == [2.0, 2.0, 4.0]
